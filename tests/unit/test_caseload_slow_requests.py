"""A request to the caseload views must arrive whole within a bound (console review,
h-caseload3), as the console's does: aiohttp's timer for a request's headers is its keep-alive
timeout, an hour by default, so a client sending a byte now and then held a connection that
long, as many as it opened. Now the request line and headers must arrive within
HTTP_REQUEST_SECONDS of the connection or of the previous answer, and a body the views never read
within as long after the answer; else the connection is closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from casetrail_platform import limits
from services.caseload.processor import build_app
from services.caseload.settings import CaseloadSettings
from tests.support.servers import free_port
from tests.support.waiting import closed_within

BOUND = 1.0


@pytest.fixture
async def views(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[int]:
    """The views' web server alone (no Kafka): its port."""
    monkeypatch.setattr(limits, "HTTP_REQUEST_SECONDS", BOUND)
    port = free_port()
    app = build_app(CaseloadSettings(data_dir=tmp_path, web_port=port))
    # Faust's aiohttp driver, whose start_server and stop_server its Web type does not declare.
    web: Any = app.web
    web.init_server()
    await web.start_server()
    try:
        yield port
    finally:
        await web.stop_server()


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"GET /caseload-status/ HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        b"GET /caseload-status/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nx",
    ],
    ids=["nothing", "headers-unfinished", "body-unfinished"],
)
async def test_a_request_that_does_not_arrive_in_time_is_closed(views: int, sent: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", views)
    writer.write(sent)
    await writer.drain()
    took = await closed_within(reader, BOUND + 8)
    writer.close()
    assert took < BOUND + 3


async def test_a_byte_now_and_then_does_not_hold_the_connection(views: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", views)
    began = time.monotonic()
    closed = asyncio.ensure_future(closed_within(reader, BOUND + 8))
    for byte in b"GET /caseload-status/ HTTP/1.1\r\n":
        if closed.done():
            break
        writer.write(bytes([byte]))
        await asyncio.sleep(BOUND / 4)
    await closed
    writer.close()
    assert time.monotonic() - began < BOUND + 3


async def test_requests_that_arrive_in_time_are_answered_on_one_connection(views: int) -> None:
    """Kept alive: each request gets the bound anew, counted from the previous answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", views)
    for _ in range(3):
        await asyncio.sleep(BOUND * 0.6)
        writer.write(b"GET /caseload-status/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
    writer.close()
