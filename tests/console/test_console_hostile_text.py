"""Hostile text in the events audit answers with is shown as text (review of the console,
h-consolerev; no defect found, kept as a regression test): every field the timeline, the state
as of a moment and the access log show, and the attributes the integrity script reads, carry a
quote-breaking script and markup that must reach the page escaped (Jinja2's autoescape for
.html templates; integrity.js writes with textContent only)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from casetrail.audit.v1 import audit_pb2
from services.console.app import create_app
from services.console.audit_client import AuditClient
from tests.console.conftest import DemoCasetrail
from tests.console.pages import sign_in

HOSTILE = "\"'><script>alert(1)</script><img src=x onerror=alert(2)>"


def assert_inert(html: str) -> None:
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


class HostileText(AuditClient):
    """Audit's answers with every text field the pages show replaced by ``HOSTILE``."""

    async def timeline(self, *args: Any, **kwargs: Any) -> audit_pb2.GetTimelineResponse:
        page = await super().timeline(*args, **kwargs)
        for entry in page.entries:
            entry.event_id = entry.event_type = entry.summary = entry.source = HOSTILE
            entry.actor.user_id = entry.actor.role = HOSTILE
        return page

    async def state_as_of(self, *args: Any, **kwargs: Any) -> tuple[audit_pb2.CaseState, datetime]:
        state, moment = await super().state_as_of(*args, **kwargs)
        state.closure_reason = state.client_id = state.client_date_of_birth = HOSTILE
        return state, moment

    async def access_log(self, *args: Any, **kwargs: Any) -> audit_pb2.GetAccessLogResponse:
        log = await super().access_log(*args, **kwargs)
        for record in log.records:
            record.accessor.user_id = record.purpose = record.client_application = HOSTILE
            record.fields.append(HOSTILE)
        for refusal in log.refusals:
            refusal.accessor.user_id = refusal.rule = refusal.action = HOSTILE
        return log


@pytest.fixture
def hostile(demo_casetrail: DemoCasetrail) -> Iterator[TestClient]:
    app = create_app(demo_casetrail.settings(), audit_client=HostileText)
    with TestClient(app, base_url="http://127.0.0.1", follow_redirects=True) as test_client:
        yield test_client


def test_hostile_text_in_events_is_shown_as_text(
    hostile: TestClient, demo_casetrail: DemoCasetrail
) -> None:
    sign_in(hostile)
    case = demo_casetrail.case_id
    timeline = hostile.get(f"/cases/{case}")
    assert timeline.status_code == 200
    assert_inert(timeline.text)
    assert 'data-event-id="&#34;&#39;&gt;&lt;script&gt;' in timeline.text
    state = hostile.get(f"/cases/{case}/state", params={"at": "2199-01-01T00:00"})
    assert state.status_code == 200
    assert_inert(state.text)
    access = hostile.get(f"/cases/{case}/access")
    assert access.status_code == 200
    assert_inert(access.text)
