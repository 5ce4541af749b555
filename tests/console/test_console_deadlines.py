"""A page waits for audit a bounded time, and a stop for the pages under way (review of the
console, h-consolerev): the console's calls to audit had no deadline, so an audit that accepted
a call and never answered held the page, and the reader's connection, open for good. Each unary
call now has the console's ``audit_seconds`` (30 s by default), as the CLI's commands have
``--timeout``; the page then says audit did not answer (504)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import grpc

from casetrail.audit.v1 import audit_pb2
from casetrail_platform.shutdown import SERVER_STOP_GRACE_SECONDS
from services.console.server import start_console
from tests.console.conftest import DemoCasetrail
from tests.console.http import cookie_jar, sign_in

AUDIT = "casetrail.audit.v1.AuditService"


async def _never_answers(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    await asyncio.Event().wait()
    return b""


async def stalled_audit() -> tuple[grpc.aio.Server, str]:
    """An audit that takes every GetTimeline call and never answers it."""
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(_never_answers)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(AUDIT, {"GetTimeline": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_a_stalled_audit_gets_a_page_saying_so_within_the_bound(
    demo_casetrail: DemoCasetrail,
) -> None:
    audit, address = await stalled_audit()
    settings = demo_casetrail.settings(audit_address=address, audit_seconds=1.0)
    console = await start_console(settings, "127.0.0.1", 0)
    # Without a deadline the page never answered, and the console's stop waited for it.
    async with asyncio.timeout(30):
        try:
            async with aiohttp.ClientSession(
                cookie_jar=cookie_jar(), timeout=aiohttp.ClientTimeout(total=20)
            ) as http:
                await sign_in(http, console.url)
                began = time.monotonic()
                async with http.get(f"{console.url}/cases/{demo_casetrail.case_id}") as answer:
                    status, text = answer.status, await answer.text()
                took = time.monotonic() - began
        finally:
            await console.stop()
            await audit.stop(None)
    assert status == 504
    assert "did not answer in time" in text
    assert took < 10


async def _one_chunk_then_nothing(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    yield audit_pb2.ExportCaseResponse(json_lines=b'{"id": "first"}\n').SerializeToString()
    await asyncio.Event().wait()


async def test_stopping_gives_a_request_in_flight_the_servers_grace_then_ends_it(
    demo_casetrail: DemoCasetrail,
) -> None:
    """An export whose stream stalls (streams have no deadline: a large case takes long) held
    the console's stop for good: uvicorn waited for every response under way, and
    `casetrail serve` stopped the console before the services. It now gets the gRPC servers'
    grace (SERVER_STOP_GRACE_SECONDS) and is then cancelled."""
    server = grpc.aio.server()
    handler = grpc.unary_stream_rpc_method_handler(_one_chunk_then_nothing)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(AUDIT, {"ExportCase": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    settings = demo_casetrail.settings(audit_address=f"127.0.0.1:{port}")
    console = await start_console(settings, "127.0.0.1", 0)
    stopped = False
    async with asyncio.timeout(SERVER_STOP_GRACE_SECONDS + 15):
        try:
            async with aiohttp.ClientSession(cookie_jar=cookie_jar()) as http:
                await sign_in(http, console.url)
                async with http.get(f"{console.url}/cases/{demo_casetrail.case_id}/export") as got:
                    assert got.status == 200
                    assert await got.content.readline() == b'{"id": "first"}\n'
                    began = time.monotonic()
                    await console.stop()
                    stopped = True
                    took = time.monotonic() - began
        finally:
            if not stopped:
                await console.stop()
            await server.stop(None)
    assert took < SERVER_STOP_GRACE_SECONDS + 3
