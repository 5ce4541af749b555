"""A fault of the console's own is logged with a reference and where it was raised, never its
message, which may quote case data or a token (review of the console, h-consolerev): Starlette
re-raises every exception after its handler has answered, and uvicorn then logged it whole
("Exception in ASGI application" and the traceback, message included)."""

from __future__ import annotations

import logging
import re

import aiohttp
import pytest

from services.console.audit_client import AuditClient
from services.console.server import start_console
from tests.console.conftest import DemoCasetrail
from tests.console.http import cookie_jar, sign_in

SECRET = "date_of_birth=1961-04-12 of Marco"


class FailingTimeline(AuditClient):
    """A fault on the timeline whose message quotes a sensitive value (a decoding error of
    pydantic's quotes the input it refused)."""

    async def timeline(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        raise ValueError(f"cannot show {SECRET}")


async def test_a_fault_is_logged_by_reference_without_its_message(
    demo_casetrail: DemoCasetrail, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    console = await start_console(
        demo_casetrail.settings(), "127.0.0.1", 0, audit_client=FailingTimeline
    )
    try:
        async with aiohttp.ClientSession(cookie_jar=cookie_jar()) as http:
            await sign_in(http, console.url)
            async with http.get(f"{console.url}/cases/{demo_casetrail.case_id}") as answer:
                assert answer.status == 500
                shown = await answer.text()
    finally:
        await console.stop()
    reference = re.search(r"Reference ([0-9a-f]{12})", shown)
    assert reference is not None
    assert SECRET not in shown
    logged = "\n".join(
        record.getMessage()
        + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        for record in caplog.records
    )
    assert reference.group(1) in logged
    assert SECRET not in logged
    assert "Traceback" not in logged
