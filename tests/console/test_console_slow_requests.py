"""A request must arrive whole within a bound (review of the console, h-consolerev): uvicorn
times out nothing before a request's headers are complete, so a client sending a request a
byte at a time, or nothing at all, held its connection (a descriptor of the process that also
serves the four services under `casetrail serve`) for good, however many it opened. Now the
request line, headers and body must arrive within HTTP_REQUEST_SECONDS of the connection or of the
previous answer; else the connection is closed."""

from __future__ import annotations

import asyncio

import pytest

from casetrail_platform import limits
from services.console.server import start_console
from tests.console.conftest import DemoCasetrail
from tests.support.waiting import closed_within

BOUND = 1.0


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"GET /signin HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        b"POST /signin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\ncsrf=",
    ],
    ids=["nothing", "headers-unfinished", "body-unfinished"],
)
async def test_a_request_that_does_not_arrive_in_time_is_closed(
    demo_casetrail: DemoCasetrail, monkeypatch: pytest.MonkeyPatch, sent: bytes
) -> None:
    monkeypatch.setattr(limits, "HTTP_REQUEST_SECONDS", BOUND)
    console = await start_console(demo_casetrail.settings(), "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
        writer.write(sent)
        await writer.drain()
        took = await closed_within(reader, BOUND + 5)
        writer.close()
    finally:
        await console.stop()
    assert took < BOUND + 2


async def test_requests_that_arrive_in_time_are_answered_on_one_connection(
    demo_casetrail: DemoCasetrail, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kept alive: each request gets the bound anew, counted from the previous answer."""
    monkeypatch.setattr(limits, "HTTP_REQUEST_SECONDS", BOUND)
    console = await start_console(demo_casetrail.settings(), "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
        for _ in range(3):
            await asyncio.sleep(BOUND * 0.6)
            writer.write(b"GET /signin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        writer.close()
    finally:
        await console.stop()
