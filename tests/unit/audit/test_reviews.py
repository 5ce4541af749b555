"""The need-to-know reviews through a real grpc.aio server: the accounting of disclosures and a
case as a user saw it at a moment, with what each records."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2

from casetrail.audit.v1 import audit_pb2, audit_pb2_grpc
from casetrail.common.v1 import common_pb2
from casetrail_platform.grpc_platform.answer_caps import Cap
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.store.sqlite import SqliteEventStore
from cli.rpc import Person
from events.catalog.access import (
    AccessPurpose,
    ConsentGranted,
    ConsentRecipient,
    ConsentRevoked,
    DisclosureBasis,
    RecipientKind,
    RecordAccessDenied,
    RecordAccessed,
    RecordSection,
)
from events.catalog.base import Role
from events.catalog.planning import Goal, GoalAdded, GoalTerm, PlanAgreed, PlanDrafted
from events.catalog.referrals import ReferralAccepted, ReferralMade
from events.catalog.scheduling import LocationKind, ServiceKind, ServiceLocation, ServiceScheduled
from events.catalog.values import NeedCategory, Provider, Urgency
from events.envelope import Actor, RecordedEvent
from events.registry import EventRegistry
from services.audit.adapters.client_cases import ClientCasesProjection, ReadModelClientCases
from services.audit.adapters.disclosure_index import (
    DisclosureIndexProjection,
    ReadModelDisclosureIndex,
)
from services.audit.adapters.timeline import (
    ClientTrailProjection,
    ReadModelTimelines,
    TimelineProjection,
)
from services.audit.app import as_seen
from services.audit.app.disclosures import period, six_years_before
from services.audit.app.queries import AuditDeps
from services.audit.domain.disclosures import disclosure_of
from services.audit.entrypoints import responses
from services.audit.entrypoints.grpc_server import AuditServicer
from tests.support.grpc import details, refusal, violated_fields
from tests.support.identity import TestIssuer, acting
from tests.unit.audit.serving import audit_server
from tests.unit.audit.support import (
    CASE,
    CLIENT,
    COORDINATOR,
    DAY,
    T0,
    TEAM,
    Producer,
    assigned,
    client_history,
    coordination,
    intake,
    opened,
)

PARTNER = "harbour-services"
WORKER = "worker-ana"
CONSENT = "consent-1"
HOUR = timedelta(hours=1)
HOME = "eastbay-dss"


def read_by(
    accessor: str, role: Role, agency: str, purpose: AccessPurpose, rule: str, **more: Any
) -> RecordAccessed:
    return RecordAccessed(
        case_id=CASE,
        accessor_id=accessor,
        accessor_role=role,
        accessor_agency_id=agency,
        purpose=purpose,
        sections=more.pop("sections", (RecordSection.IDENTITY, RecordSection.REFERRALS)),
        rule=rule,
        policy_version="2026.12-2",
        **more,
    )


def history() -> list[RecordedEvent]:
    """Opened on day 0; assigned to worker-ana (team-east) on day 1; consent to the partner and
    a referral on day 2; worker-ana reads on day 3, the partner on day 4; the consent is
    revoked on day 5 and the partner's next read refused."""
    desk, office = intake(), coordination()
    access = coordination()
    access.stream = f"access-{CASE}"
    partner = Actor(PARTNER, Role.PARTNER_AGENCY)
    return [
        desk.record(opened(), occurred_at=T0),
        office.record(assigned(), occurred_at=T0 + DAY, actor=COORDINATOR),
        desk.record(
            ConsentGranted(
                case_id=CASE,
                client_id=CLIENT,
                consent_id=CONSENT,
                scope=(RecordSection.IDENTITY, RecordSection.REFERRALS, RecordSection.SERVICES),
                recipient=ConsentRecipient(
                    kind=RecipientKind.AGENCY, recipient_id=PARTNER, name="Harbour"
                ),
                purpose=AccessPurpose.COORDINATION,
                expires_at=T0 + 90 * DAY,
            ),
            occurred_at=T0 + 2 * DAY,
        ),
        office.record(
            ReferralMade(
                case_id=CASE,
                referral_id="ref-1",
                provider=Provider(provider_id=PARTNER, name="Harbour Services"),
                need_category=NeedCategory.HOME_CARE,
                service="Morning care",
                urgency=Urgency.SOON,
                reason="Cannot dress alone",
                disclosure_basis=DisclosureBasis.CONSENT,
                consent_id=CONSENT,
            ),
            occurred_at=T0 + 2 * DAY + HOUR,
            actor=COORDINATOR,
        ),
        office.record(
            ReferralAccepted(case_id=CASE, referral_id="ref-1", provider_id=PARTNER),
            occurred_at=T0 + 2 * DAY + 2 * HOUR,
            actor=partner,
        ),
        # One service for the partner's referral, one of the agency's own: the partner may see
        # only the first.
        *(
            office.record(
                ServiceScheduled(
                    case_id=CASE,
                    service_id=service_id,
                    kind=ServiceKind.HOME_CARE,
                    provider=Provider(provider_id=provider, name=provider),
                    starts_at=T0 + 10 * DAY,
                    ends_at=T0 + 10 * DAY + HOUR,
                    location=ServiceLocation(kind=LocationKind.CLIENT_HOME),
                    referral_id=referral_id,
                ),
                occurred_at=T0 + 2 * DAY + 3 * HOUR,
                actor=COORDINATOR,
            )
            for service_id, provider, referral_id in (
                ("svc-partner", PARTNER, "ref-1"),
                ("svc-own", HOME, None),
            )
        ),
        access.record(
            read_by(WORKER, Role.SOCIAL_WORKER, HOME, AccessPurpose.DIRECT_CARE, "assigned-worker"),
            occurred_at=T0 + 3 * DAY,
            actor=Actor(WORKER, Role.SOCIAL_WORKER),
        ),
        access.record(
            read_by(
                PARTNER,
                Role.PARTNER_AGENCY,
                PARTNER,
                AccessPurpose.COORDINATION,
                "referral-recipient",
                consent_ids=(CONSENT,),
            ),
            occurred_at=T0 + 4 * DAY,
            actor=partner,
        ),
        desk.record(
            ConsentRevoked(case_id=CASE, client_id=CLIENT, consent_id=CONSENT),
            occurred_at=T0 + 5 * DAY,
        ),
        access.record(
            RecordAccessDenied(
                case_id=CASE,
                accessor_id=PARTNER,
                accessor_role=Role.PARTNER_AGENCY,
                accessor_agency_id=PARTNER,
                purpose=AccessPurpose.COORDINATION,
                action="read a case",
                rule="consent-required",
                policy_version="2026.12-2",
            ),
            occurred_at=T0 + 5 * DAY + HOUR,
            actor=partner,
        ),
    ]


@asynccontextmanager
async def audit_over(
    events: list[RecordedEvent],
    deps: AuditDeps,
    read_models: SqliteReadModelStore,
    registry: EventRegistry,
    issuer: TestIssuer,
) -> AsyncIterator[audit_pb2_grpc.AuditServiceAsyncStub]:
    """Audit's real servicer, its projections fed ``events`` as the bus delivers them."""
    for projection in (
        TimelineProjection(),
        ClientTrailProjection(),
        ClientCasesProjection(),
        DisclosureIndexProjection(HOME),
    ):
        handler = BusProjectionHandler(read_models, projection, service="audit")
        for recorded in events:
            await handler(recorded)
    servicer = AuditServicer(
        deps,
        None,
        ReadModelClientCases(read_models),
        ReadModelDisclosureIndex(read_models, registry),
    )
    async with audit_server(servicer, issuer) as stub:
        yield stub


@pytest.fixture
async def audit(
    deps: AuditDeps,
    read_models: SqliteReadModelStore,
    registry: EventRegistry,
    issuer: TestIssuer,
) -> AsyncIterator[audit_pb2_grpc.AuditServiceAsyncStub]:
    async with audit_over(history(), deps, read_models, registry, issuer) as stub:
        yield stub


def as_(
    person: str = "auditor-kim", role: str = "auditor", purpose: str = "confidentiality_review"
) -> Any:
    return acting(Person(person, role), common_pb2.QueryContext(purpose=purpose))


def stamp(moment: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(moment)
    return message


def accounting(**fields: Any) -> audit_pb2.ListDisclosuresRequest:
    fields.setdefault("context", as_())
    fields.setdefault("client_id", CLIENT)
    fields.setdefault("period_start", stamp(T0))
    return audit_pb2.ListDisclosuresRequest(**fields)


def seen_as(user: str, at: datetime, **fields: Any) -> audit_pb2.GetCaseAsSeenRequest:
    fields.setdefault("context", as_())
    return audit_pb2.GetCaseAsSeenRequest(case_id=CASE, user_id=user, as_of=stamp(at), **fields)


async def test_the_accounting_lists_the_referral_and_the_partner_read_not_the_team_read(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, store: SqliteEventStore
) -> None:
    answer = await audit.ListDisclosures(accounting())

    assert list(answer.case_ids) == [CASE]
    assert answer.total_disclosures == 2
    referral, read = answer.disclosures
    assert (referral.event_type, referral.recipient.recipient_id, referral.basis) == (
        "casetrail.referral.made",
        PARTNER,
        "consent",
    )
    assert (referral.consent_id, referral.purpose, referral.disclosed_by.user_id) == (
        CONSENT,
        "coordination",
        COORDINATOR.user_id,
    )
    assert list(referral.sections) == ["identity", "referrals", "services"]
    assert "casetrail.referral.made.reason" in referral.fields
    assert (read.recipient.kind, read.recipient.agency_id, read.disclosed_by.user_id) == (
        "agency",
        PARTNER,
        PARTNER,
    )
    assert (read.consent_id, read.rule, read.purpose) == (
        CONSENT,
        "referral-recipient",
        "coordination",
    )
    assert read.disclosed_at.ToDatetime() == (T0 + 4 * DAY).replace(tzinfo=None)
    assert WORKER not in {d.disclosed_by.user_id for d in answer.disclosures}
    # The accounting is itself an audited read of the case's access log.
    recorded = [r.event for r in await store.read_all(0)]
    assert [(e.accessor_id, e.sections) for e in recorded if isinstance(e, RecordAccessed)] == [
        ("auditor-kim", (RecordSection.ACCESS_LOG,))
    ]


async def test_the_period_bounds_the_accounting_and_pages_are_stable(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
) -> None:
    later = await audit.ListDisclosures(accounting(period_start=stamp(T0 + 3 * DAY)))
    assert [d.event_type for d in later.disclosures] == ["casetrail.record.accessed"]
    earlier = await audit.ListDisclosures(accounting(period_end=stamp(T0 + 3 * DAY)))
    assert [d.event_type for d in earlier.disclosures] == ["casetrail.referral.made"]

    first = await audit.ListDisclosures(accounting(page_size=1))
    assert first.next_page_token
    assert first.total_disclosures == 2
    second = await audit.ListDisclosures(accounting(page_size=1, page_token=first.next_page_token))
    assert not second.next_page_token
    assert [d.event_type for d in [*first.disclosures, *second.disclosures]] == [
        "casetrail.referral.made",
        "casetrail.record.accessed",
    ]
    code, status = await refusal(
        audit.ListDisclosures(
            accounting(period_start=stamp(T0 + DAY), page_size=1, page_token=first.next_page_token)
        )
    )
    assert (code, violated_fields(status)) == (grpc.StatusCode.INVALID_ARGUMENT, ["page_token"])


@pytest.mark.parametrize(
    "numbers",
    [
        (10**30, 1),  # the period's end: no moment
        (None, 1e400),  # the cursor's time, read by JSON as infinity
    ],
)
async def test_a_token_holding_a_number_no_moment_has_names_the_page_token(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, numbers: tuple[int | None, float]
) -> None:
    """A token is the caller's to send back: one edited to hold a number past any moment is
    refused naming it, as any other token this service did not issue (it was INTERNAL)."""
    first = await audit.ListDisclosures(accounting(page_size=1))
    issued = json.loads(base64.urlsafe_b64decode(first.next_page_token))
    end, at = numbers
    forged = [*issued[:2], issued[2] if end is None else end, at, issued[4]]
    token = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode("ascii")
    code, status = await refusal(audit.ListDisclosures(accounting(page_size=1, page_token=token)))
    assert (code, violated_fields(status)) == (grpc.StatusCode.INVALID_ARGUMENT, ["page_token"])


@pytest.mark.parametrize(
    ("at", "event_id"),
    [
        (None, "\ud800"),  # a lone surrogate: failed to encode in the key range (INTERNAL)
        (None, "\x00"),  # a NUL: a key on SQLite, refused by PostgreSQL (INTERNAL there)
        (None, "x" * 300),
        (None, 123),
        (True, None),  # JSON's true, which int() took for 1
        (-(10**30), None),
    ],
)
async def test_a_token_whose_cursor_this_service_never_wrote_names_the_page_token(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, at: object, event_id: object
) -> None:
    """The cursor's time and event id are checked as this service writes them (a moment's
    microseconds, an event id's canonical text) before they reach the index's key range, so
    the embedded and the distributed backends refuse the same token alike."""
    first = await audit.ListDisclosures(accounting(page_size=1))
    issued = json.loads(base64.urlsafe_b64decode(first.next_page_token))
    forged = [
        *issued[:3],
        issued[3] if at is None else at,
        issued[4] if event_id is None else event_id,
    ]
    token = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode("ascii")
    code, status = await refusal(audit.ListDisclosures(accounting(page_size=1, page_token=token)))
    assert (code, violated_fields(status)) == (grpc.StatusCode.INVALID_ARGUMENT, ["page_token"])


async def test_a_bound_given_between_two_microseconds_keeps_to_the_trails_microseconds(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
) -> None:
    # The trail's times are microseconds: a start half a microsecond after a disclosure is
    # after it (it was counted in when the start was cut down to the microsecond).
    every = await audit.ListDisclosures(accounting())
    first = every.disclosures[0].disclosed_at
    half_after = Timestamp(seconds=first.seconds, nanos=first.nanos + 500)
    later = await audit.ListDisclosures(accounting(period_start=half_after))
    assert [d.event_id for d in later.disclosures] == [d.event_id for d in every.disclosures[1:]]
    # Within one microsecond, the period holds none of the trail's instants: said so.
    code, status = await refusal(
        audit.ListDisclosures(
            accounting(
                period_start=half_after,
                period_end=Timestamp(seconds=first.seconds, nanos=first.nanos + 900),
            )
        )
    )
    assert (code, violated_fields(status)) == (grpc.StatusCode.INVALID_ARGUMENT, ["period_end"])


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"period_start": stamp(T0), "period_end": stamp(T0 - DAY)}, "period_end"),
        ({"period_start": stamp(T0 - 6 * 366 * DAY), "period_end": stamp(T0)}, "period_start"),
        ({"period_start": None}, "period_start"),
        # No period_end: the period ends now, before this start.
        ({"period_start": stamp(datetime.now(UTC) + DAY)}, "period_start"),
        ({"client_id": ""}, "client_id"),
        ({"page_size": 1001}, "page_size"),
    ],
)
async def test_a_bad_accounting_request_names_the_field(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, fields: dict[str, Any], field: str
) -> None:
    request = accounting(**{k: v for k, v in fields.items() if v is not None})
    if fields.get("period_start", 0) is None:
        request.ClearField("period_start")
    code, status = await refusal(audit.ListDisclosures(request))
    assert (code, violated_fields(status)) == (grpc.StatusCode.INVALID_ARGUMENT, [field])


def test_six_years_is_counted_in_calendar_years() -> None:
    end = datetime.fromisoformat("2032-02-29T12:00:00+00:00")
    assert six_years_before(end) == datetime.fromisoformat("2026-03-01T12:00:00+00:00")
    assert period(six_years_before(end), end).start == six_years_before(end)


async def test_who_may_ask_for_an_accounting(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, store: SqliteEventStore
) -> None:
    own = await audit.ListDisclosures(accounting(context=as_(CLIENT, "client", "client_request")))
    assert own.total_disclosures == 2

    code, status = await refusal(
        audit.ListDisclosures(accounting(context=as_("client-other", "client", "client_request")))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details(status, error_details_pb2.ErrorInfo)[0].reason == "NO_RELATIONSHIP"
    code, status = await refusal(
        audit.ListDisclosures(accounting(context=as_(WORKER, "social_worker", "direct_care")))
    )
    assert details(status, error_details_pb2.ErrorInfo)[0].reason == "ROLE_NOT_ALLOWED"
    code, _ = await refusal(audit.ListDisclosures(accounting(client_id="client-nobody")))
    assert code == grpc.StatusCode.NOT_FOUND
    # A role that may never ask is refused alike whether the client has cases or not.
    code, _ = await refusal(
        audit.ListDisclosures(
            accounting(
                client_id="client-nobody", context=as_(WORKER, "social_worker", "coordination")
            )
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    denied = [r.event for r in await store.read_all(0) if isinstance(r.event, RecordAccessDenied)]
    assert [(e.accessor_id, e.rule, e.case_id) for e in denied] == [
        ("client-other", "no-relationship", CASE),
        (WORKER, "role-not-allowed", CASE),
        (WORKER, "role-not-allowed", "disclosure-accounting"),
    ]


async def test_a_caller_refused_an_accounting_is_refused_alike_for_a_client_that_is_none(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, store: SqliteEventStore
) -> None:
    """An id that is no client here was NOT_FOUND before any decision, unrecorded: another
    agency's auditor or any client told real clients from unknown ids, and left no trace."""
    # Another purpose than the home auditor's: a test's caller is known by its context's.
    westside = acting(
        Person("auditor-west", "auditor", agency="westside-dss"),
        common_pb2.QueryContext(purpose="legal_obligation"),
    )
    for context in (westside, as_("client-other", "client", "client_request")):
        answers = [
            await refusal(audit.ListDisclosures(accounting(context=context, client_id=asked)))
            for asked in (CLIENT, "client-nobody")
        ]
        (real_code, real), (unknown_code, unknown) = answers
        assert real_code is unknown_code is grpc.StatusCode.PERMISSION_DENIED
        assert unknown == real
    denied = [r.event for r in await store.read_all(0) if isinstance(r.event, RecordAccessDenied)]
    assert [(e.accessor_id, e.rule, e.case_id) for e in denied] == [
        ("auditor-west", "no-relationship", CASE),
        ("auditor-west", "no-relationship", "disclosure-accounting"),
        ("client-other", "no-relationship", CASE),
        ("client-other", "no-relationship", "disclosure-accounting"),
    ]
    # Whoever may ask for it is told there is no such client.
    code, _ = await refusal(audit.ListDisclosures(accounting(client_id="client-nobody")))
    assert code == grpc.StatusCode.NOT_FOUND


def caseless() -> list[RecordedEvent]:
    """The client registered the day before their case (``history``) is opened, and their
    record read then by an auditor for a court order: intake records a read of a client with
    no case under the client's id, in ``access-<client id>``."""
    registered, *_ = client_history()
    reads = Producer("casetrail/intake", f"access-{CLIENT}")
    court = Actor("auditor-kim", Role.AUDITOR)
    read = RecordAccessed(
        case_id=CLIENT,
        accessor_id=court.user_id,
        accessor_role=court.role,
        accessor_agency_id=HOME,
        purpose=AccessPurpose.LEGAL_OBLIGATION,
        sections=(RecordSection.IDENTITY,),
        rule="auditor-legal-obligation",
        policy_version="2026.12-2",
    )
    return [registered, reads.record(read, occurred_at=T0 - DAY + HOUR, actor=court)]


def accounted(answer: audit_pb2.ListDisclosuresResponse) -> list[tuple[str, str, str]]:
    return [(d.case_id, d.event_type, d.basis) for d in answer.disclosures]


async def test_a_read_of_a_client_with_no_case_is_in_their_accounting_before_and_after_a_case(
    deps: AuditDeps,
    read_models: SqliteReadModelStore,
    registry: EventRegistry,
    issuer: TestIssuer,
    store: SqliteEventStore,
) -> None:
    """Recorded under the client's id, the read was never looked for: the accounting said
    NOT_FOUND while the client had no case, and once one was opened listed its disclosures
    only (45 CFR 164.528 leaves no disclosure out)."""
    since = accounting(period_start=stamp(T0 - 2 * DAY))
    court_read = (CLIENT, "casetrail.record.accessed", "legal_obligation")
    async with audit_over(caseless(), deps, read_models, registry, issuer) as audit:
        answer = await audit.ListDisclosures(since)
        assert (list(answer.case_ids), answer.total_disclosures) == ([], 1)
        assert accounted(answer) == [court_read]
        # The client themself is told of it too.
        own = await audit.ListDisclosures(
            accounting(
                period_start=since.period_start, context=as_(CLIENT, "client", "client_request")
            )
        )
        assert accounted(own) == [court_read]
        # An id audit knows no client by is still none.
        code, _ = await refusal(audit.ListDisclosures(accounting(client_id="client-nobody")))
        assert code == grpc.StatusCode.NOT_FOUND
    recorded = [r.event for r in await store.read_all(0)]
    assert [(e.case_id, e.sections) for e in recorded if isinstance(e, RecordAccessed)] == [
        (CLIENT, (RecordSection.ACCESS_LOG,)),
        (CLIENT, (RecordSection.ACCESS_LOG,)),
    ]

    # The case is opened later: the read made before is still the client's to be told of,
    # first, and pages run across the case's disclosures and the client's own.
    async with audit_over(history(), deps, read_models, registry, issuer) as audit:
        answer = await audit.ListDisclosures(since)
        assert (list(answer.case_ids), answer.total_disclosures) == ([CASE], 3)
        every = [
            court_read,
            (CASE, "casetrail.referral.made", "consent"),
            (CASE, "casetrail.record.accessed", "consent"),
        ]
        assert accounted(answer) == every
        paged: list[tuple[str, str, str]] = []
        token = ""
        while True:
            page = await audit.ListDisclosures(
                accounting(period_start=since.period_start, page_size=1, page_token=token)
            )
            assert page.total_disclosures == 3
            paged.extend(accounted(page))
            if not (token := page.next_page_token):
                break
        assert paged == every
        # A period after the read leaves it out, and records no read of the client's own.
        before = len(await store.read_all(0))
        later = await audit.ListDisclosures(accounting(period_start=stamp(T0)))
        assert [case_id for case_id, *_ in accounted(later)] == [CASE, CASE]
        recorded = [r.event for r in (await store.read_all(0))[before:]]
        assert [e.case_id for e in recorded if isinstance(e, RecordAccessed)] == [CASE]


async def test_an_accounting_rebuilt_from_zero_holds_the_read_of_a_client_with_no_case(
    deps: AuditDeps,
    read_models: SqliteReadModelStore,
    registry: EventRegistry,
    issuer: TestIssuer,
    store: SqliteEventStore,
    tmp_path: Path,
) -> None:
    """Rebuilt from the bus in any order (another projection's group ahead of the other's),
    the accounting answers as the one built as the events came."""
    events = [*caseless(), *history()]
    since = accounting(period_start=stamp(T0 - 2 * DAY), period_end=stamp(T0 + 30 * DAY))
    async with audit_over(events, deps, read_models, registry, issuer) as audit:
        live = await audit.ListDisclosures(since)
    rebuilt_models = SqliteReadModelStore(tmp_path / "rebuilt.db")
    try:
        rebuilt = AuditDeps(ReadModelTimelines(rebuilt_models, registry), store, deps.access)
        async with audit_over(events[::-1], rebuilt, rebuilt_models, registry, issuer) as audit:
            assert await audit.ListDisclosures(since) == live
    finally:
        await rebuilt_models.close()
    assert accounted(live)[0] == (CLIENT, "casetrail.record.accessed", "legal_obligation")


async def test_a_server_without_the_accounting_checks_the_request_and_the_role_first(
    deps: AuditDeps, issuer: TestIssuer, store: SqliteEventStore
) -> None:
    # NOT_FOUND (this server keeps no accounting) comes last: a malformed request is
    # INVALID_ARGUMENT on every server, and a role no rule lets ask is refused and recorded.
    async with audit_server(AuditServicer(deps), issuer) as audit:
        code, status = await refusal(audit.ListDisclosures(accounting(client_id="client 7")))
        assert (code, violated_fields(status)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            ["client_id"],
        )
        code, _ = await refusal(
            audit.ListDisclosures(accounting(context=as_(WORKER, "social_worker", "coordination")))
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        code, _ = await refusal(audit.ListDisclosures(accounting()))
        assert code == grpc.StatusCode.NOT_FOUND
    denied = [r.event for r in await store.read_all(0) if isinstance(r.event, RecordAccessDenied)]
    assert [(e.accessor_id, e.rule, e.case_id) for e in denied] == [
        (WORKER, "role-not-allowed", "disclosure-accounting")
    ]


async def test_a_server_without_the_client_index_refuses_and_records_the_role_first(
    deps: AuditDeps, issuer: TestIssuer, store: SqliteEventStore
) -> None:
    # As ListDisclosures: a role no rule lets read a trail is refused and recorded (under the
    # index, no case of the client being known) before NOT_FOUND says the index is missing.
    async with audit_server(AuditServicer(deps), issuer) as audit:
        code, _ = await refusal(
            audit.FindCasesOfClient(
                audit_pb2.FindCasesOfClientRequest(
                    context=as_(WORKER, "receptionist", "coordination"), client_id=CLIENT
                )
            )
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        code, _ = await refusal(
            audit.FindCasesOfClient(
                audit_pb2.FindCasesOfClientRequest(context=as_(), client_id=CLIENT)
            )
        )
        assert code == grpc.StatusCode.NOT_FOUND
    denied = [r.event for r in await store.read_all(0) if isinstance(r.event, RecordAccessDenied)]
    assert [(e.accessor_id, e.rule, e.case_id) for e in denied] == [
        (WORKER, "role-not-allowed", "client-index")
    ]


async def test_the_assigned_worker_sees_nothing_before_the_assignment_and_all_after(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
) -> None:
    before = await audit.GetCaseAsSeen(
        seen_as(WORKER, T0 + 12 * HOUR, user_role="social_worker", user_purpose="direct_care")
    )
    after = await audit.GetCaseAsSeen(seen_as(WORKER, T0 + 3 * DAY + HOUR))

    assert (before.entitlement.allowed, before.entitlement.rule) == (False, "no-relationship")
    assert before.state.case_id == CASE
    assert not before.state.client_id
    assert not before.reads
    assert (after.entitlement.allowed, after.entitlement.rule) == (True, "assigned-worker")
    assert after.state.client_id == CLIENT
    assert after.state.assignment.worker_id == WORKER
    assert {s.service_id for s in after.state.services} == {"svc-partner", "svc-own"}
    assert (after.state.services_total, after.state.services_truncated) == (2, False)
    assert (after.user.role, after.user.team, after.user.purpose) == (
        "social_worker",
        TEAM,
        "direct_care",
    )
    assert "team=assignment" in after.user.derived_from
    assert [r.accessor.user_id for r in after.reads] == [WORKER]


async def test_the_assignment_counts_from_the_very_microsecond_it_was_recorded(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
) -> None:
    claims = {"user_role": "social_worker", "user_purpose": "direct_care"}
    micro = timedelta(microseconds=1)
    at = await audit.GetCaseAsSeen(seen_as(WORKER, T0 + DAY, **claims))
    before = await audit.GetCaseAsSeen(seen_as(WORKER, T0 + DAY - micro, **claims))

    assert (at.entitlement.rule, before.entitlement.rule) == ("assigned-worker", "no-relationship")
    assert at.state.assignment.worker_id == WORKER
    assert not before.state.HasField("assignment")


async def test_the_as_seen_answer_lists_the_latest_reads_and_says_how_many_there_were(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
    read_models: SqliteReadModelStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A case read daily for years: the answer lists U's latest reads up to T, never all of
    them (it would outgrow gRPC's 4 MB answer), and says that it left some out."""
    monkeypatch.setattr(as_seen, "READS_SHOWN", 2)
    access = coordination()
    access.stream = f"access-{CASE}"
    access.sequence = 100
    handler = BusProjectionHandler(read_models, TimelineProjection(), service="audit")
    for hours in (1, 2):
        await handler(
            access.record(
                read_by(
                    WORKER,
                    Role.SOCIAL_WORKER,
                    HOME,
                    AccessPurpose.DIRECT_CARE,
                    "assigned-worker",
                    sections=(RecordSection.PLAN,),
                ),
                occurred_at=T0 + 3 * DAY + hours * HOUR,
                actor=Actor(WORKER, Role.SOCIAL_WORKER),
            )
        )

    everything = await audit.GetCaseAsSeen(seen_as(WORKER, T0 + 4 * DAY))
    before_the_last = await audit.GetCaseAsSeen(seen_as(WORKER, T0 + 3 * DAY + HOUR + HOUR / 2))

    assert (everything.reads_total, everything.reads_truncated) == (3, True)
    assert [r.recorded_at.ToDatetime(UTC) for r in everything.reads] == [
        T0 + 3 * DAY + HOUR,
        T0 + 3 * DAY + 2 * HOUR,
    ]
    assert (before_the_last.reads_total, before_the_last.reads_truncated) == (2, False)
    assert len(before_the_last.reads) == 2
    # U's role still comes from U's latest read, listed or not.
    assert "role=access_event" in everything.user.derived_from


async def test_a_namesake_at_another_agency_is_someone_else(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, read_models: SqliteReadModelStore
) -> None:
    """A subject is an agency's: another agency's supervisor named worker-ana, reading the case
    after the home agency's worker-ana, made none of U's attempts. Before, U's role came from
    the namesake's latest read and the namesake's reads were counted as U's."""
    access = coordination()
    access.stream = f"access-{CASE}"
    access.sequence = 100
    handler = BusProjectionHandler(read_models, TimelineProjection(), service="audit")
    elsewhere = read_by(
        WORKER, Role.SUPERVISOR, "westside-dss", AccessPurpose.SUPERVISION, "team-supervisor"
    )
    await handler(
        access.record(
            elsewhere, occurred_at=T0 + 3 * DAY + HOUR, actor=Actor(WORKER, Role.SUPERVISOR)
        )
    )

    home = await audit.GetCaseAsSeen(seen_as(WORKER, T0 + 4 * DAY, user_agency_id=HOME))
    namesake = await audit.GetCaseAsSeen(seen_as(WORKER, T0 + 4 * DAY))

    assert (home.user.role, home.user.agency_id, home.reads_total) == ("social_worker", HOME, 1)
    assert "role=access_event" in home.user.derived_from
    assert home.reads[0].recorded_at.ToDatetime(UTC) < T0 + 3 * DAY + HOUR
    # Without an agency in the request, U is who made the latest attempt: the namesake.
    assert (namesake.user.role, namesake.user.agency_id) == ("supervisor", "westside-dss")
    assert namesake.reads_total == 1
    assert namesake.reads[0].recorded_at.ToDatetime(UTC) == T0 + 3 * DAY + HOUR


async def test_the_reviews_never_read_the_whole_case(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A case read daily for years holds tens of thousands of access records: the as-seen
    view, the state as of a moment and the accounting read the case's own events and indexes,
    never every access record of the case."""

    async def whole_case(*args: object) -> list[RecordedEvent]:
        raise AssertionError("the whole case was read")

    monkeypatch.setattr(ReadModelTimelines, "events_of", whole_case)
    seen = await audit.GetCaseAsSeen(seen_as(PARTNER, T0 + 4 * DAY + HOUR))
    assert [r.consent_id for r in seen.reads] == [CONSENT]
    state = await audit.GetCaseStateAsOf(
        audit_pb2.GetCaseStateAsOfRequest(
            context=as_(),
            case_id=CASE,
            as_of=stamp(T0 + 3 * DAY),
            basis=audit_pb2.TIME_BASIS_RECORDED,
        )
    )
    assert state.state.client_id == CLIENT
    accounting_answer = await audit.ListDisclosures(accounting())
    assert accounting_answer.total_disclosures == 2


async def test_the_partner_sees_the_referred_scope_until_the_consent_is_revoked(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, store: SqliteEventStore
) -> None:
    consented = await audit.GetCaseAsSeen(seen_as(PARTNER, T0 + 4 * DAY + HOUR))
    revoked = await audit.GetCaseAsSeen(seen_as(PARTNER, T0 + 5 * DAY + 2 * HOUR))

    assert (consented.entitlement.rule, consented.entitlement.consent_id) == (
        "referral-recipient",
        CONSENT,
    )
    assert set(consented.entitlement.sections) == {"identity", "referrals", "services"}
    assert {"assessment", "assignment"} <= set(consented.entitlement.withheld_sections)
    assert consented.state.client_id == CLIENT
    assert not consented.state.HasField("assignment")
    assert [r.provider_id for r in consented.state.referrals] == [PARTNER]
    assert [s.service_id for s in consented.state.services] == ["svc-partner"]
    # The lists' totals count what the partner could see, not the team's own service.
    assert (consented.state.services_total, consented.state.services_truncated) == (1, False)
    assert consented.state.referrals_total == 1
    assert [r.consent_id for r in consented.reads] == [CONSENT]
    assert (consented.user.agency_id, consented.user.role) == (PARTNER, "partner_agency")
    assert (revoked.entitlement.allowed, revoked.entitlement.rule) == (False, "consent-required")
    assert not revoked.state.referrals
    # Each review is recorded as the auditor's access to what it showed.
    recorded = [r.event for r in await store.read_all(0) if isinstance(r.event, RecordAccessed)]
    assert [e.sections for e in recorded] == [
        (
            RecordSection.IDENTITY,
            RecordSection.REFERRALS,
            RecordSection.SERVICES,
            RecordSection.ACCESS_LOG,
        ),
        (RecordSection.ACCESS_LOG,),
    ]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"as_of": T0 - DAY}, "as_of"),
        ({"as_of": T0 + 1000 * 365 * DAY}, "as_of"),
        ({"user_role": "wizard"}, "user_role"),
        ({"user_purpose": "curiosity"}, "user_purpose"),
        ({"user_id": ""}, "user_id"),
        # Nobody recorded an access of hers: her role must be given.
        ({"user_id": "someone-else", "as_of": T0 + 6 * DAY}, "user_role"),
    ],
)
async def test_a_bad_as_seen_request_names_the_field(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, fields: dict[str, Any], field: str
) -> None:
    user = fields.pop("user_id", WORKER)
    at = fields.pop("as_of", T0 + 6 * DAY)
    code, status = await refusal(audit.GetCaseAsSeen(seen_as(user, at, **fields)))
    assert (code, violated_fields(status)) == (grpc.StatusCode.INVALID_ARGUMENT, [field])


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        # The refusal tells when the case began, or that she had not read it by then.
        ({"as_of": T0 - DAY}, "as_of"),
        ({"user_id": "someone-else", "as_of": T0 + 6 * DAY}, "user_role"),
    ],
)
async def test_a_refusal_that_tells_of_the_case_is_recorded_before_it_is_said(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
    store: SqliteEventStore,
    fields: dict[str, Any],
    field: str,
) -> None:
    user = fields.pop("user_id", WORKER)
    at = fields.pop("as_of", T0 + 6 * DAY)
    code, status = await refusal(audit.GetCaseAsSeen(seen_as(user, at, **fields)))
    assert (code, violated_fields(status)) == (grpc.StatusCode.INVALID_ARGUMENT, [field])
    recorded = [r.event for r in await store.read_all(0) if isinstance(r.event, RecordAccessed)]
    assert [(e.accessor_id, e.sections) for e in recorded] == [
        ("auditor-kim", (RecordSection.ACCESS_LOG,))
    ]


async def test_only_auditors_review_a_case_as_seen(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
) -> None:
    code, _ = await refusal(
        audit.GetCaseAsSeen(
            seen_as(WORKER, T0 + 6 * DAY, context=as_("super-sam", "supervisor", "supervision"))
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _ = await refusal(
        audit.GetCaseAsSeen(seen_as(WORKER, T0 + 6 * DAY, context=as_(purpose="legal_obligation")))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    missing = seen_as(WORKER, T0 + 6 * DAY)
    missing.case_id = "case-nobody"
    code, _ = await refusal(audit.GetCaseAsSeen(missing))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_another_agencys_auditor_is_refused_alike_for_a_real_case_and_an_unknown_id(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, store: SqliteEventStore
) -> None:
    """An id audit has no event of was NOT_FOUND, unrecorded, where a real case was refused on
    the record: the reviewer learnt which ids are real."""
    answers = []
    for case_id in (CASE, "case-nobody"):
        asked = seen_as(WORKER, T0 + 6 * DAY)
        asked.case_id = case_id
        acting(Person("auditor-olu", "auditor", agency=PARTNER), asked.context)
        answers.append(await refusal(audit.GetCaseAsSeen(asked)))
    (real_code, real), (unknown_code, unknown) = answers
    assert real_code is unknown_code is grpc.StatusCode.PERMISSION_DENIED
    assert unknown == real
    assert [i.reason for i in details(real, error_details_pb2.ErrorInfo)] == ["NO_RELATIONSHIP"]
    refused = [r.event for r in await store.read_all(0)]
    assert [(type(e), e.subject) for e in refused] == [
        (RecordAccessDenied, CASE),
        (RecordAccessDenied, "case-nobody"),
    ]


@pytest.mark.parametrize(
    ("reader", "role", "agency", "purpose", "rule", "more", "basis"),
    [
        # Break the glass: a disclosure whoever reads, even staff of the agency.
        (
            "sw-luis",
            Role.SOCIAL_WORKER,
            HOME,
            AccessPurpose.EMERGENCY,
            "break-glass",
            {"emergency_access_id": "emergency-1"},
            DisclosureBasis.EMERGENCY,
        ),
        # Required by law: the reader stands for the external recipient.
        (
            "auditor-kim",
            Role.AUDITOR,
            HOME,
            AccessPurpose.LEGAL_OBLIGATION,
            "auditor-legal-obligation",
            {},
            DisclosureBasis.LEGAL_OBLIGATION,
        ),
        # Another agency reading without any recorded basis: listed, with the basis empty.
        ("harbour", Role.PARTNER_AGENCY, PARTNER, AccessPurpose.COORDINATION, "x", {}, None),
    ],
)
def test_what_counts_as_a_disclosure(
    reader: str,
    role: Role,
    agency: str,
    purpose: AccessPurpose,
    rule: str,
    more: dict[str, Any],
    basis: DisclosureBasis | None,
) -> None:
    recorded = coordination().record(
        read_by(reader, role, agency, purpose, rule, **more), occurred_at=T0
    )
    found = disclosure_of(recorded, HOME)
    assert found is not None
    assert (found.basis, found.disclosed_by.user_id) == (basis, reader)
    assert found.emergency_access_id == more.get("emergency_access_id")


def test_a_partner_read_under_several_consents_names_every_one() -> None:
    """A partner agency reads under each accepted referral's own consent: the access log and
    the client's accounting name every consent the read rested on, not the first alone."""
    both = ("consent-1", "consent-2")
    recorded = coordination().record(
        read_by(
            PARTNER,
            Role.PARTNER_AGENCY,
            PARTNER,
            AccessPurpose.COORDINATION,
            "referral-recipient",
            consent_ids=both,
        ),
        occurred_at=T0,
    )
    found = disclosure_of(recorded, HOME)
    assert found is not None
    assert (found.basis, found.consent_ids) == (DisclosureBasis.CONSENT, both)
    assert "under consents consent-1, consent-2" in found.description
    logged = responses.access_record(recorded)
    assert (logged.consent_id, list(logged.consent_ids)) == ("consent-1", list(both))


@pytest.mark.parametrize(
    ("reader", "role", "purpose", "rule"),
    [
        (CLIENT, Role.CLIENT, AccessPurpose.CLIENT_REQUEST, "client-self"),
        ("super-sam", Role.SUPERVISOR, AccessPurpose.SUPERVISION, "team-supervisor"),
        ("auditor-kim", Role.AUDITOR, AccessPurpose.CONFIDENTIALITY_REVIEW, "auditor-review"),
        ("coord-carla", Role.COORDINATOR, AccessPurpose.COORDINATION, "agency-coordinator"),
    ],
)
def test_internal_uses_and_the_clients_own_reads_are_not_disclosures(
    reader: str, role: Role, purpose: AccessPurpose, rule: str
) -> None:
    recorded = coordination().record(read_by(reader, role, HOME, purpose, rule), occurred_at=T0)
    assert disclosure_of(recorded, HOME) is None


async def test_the_partner_is_not_shown_the_status_or_activity_of_sections_it_was_not_entitled_to(
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
) -> None:
    # The case is assigned by then: its status would say so to a partner that may not see the
    # assignment, and how many events and when the last would count the withheld sections'.
    partner = await audit.GetCaseAsSeen(seen_as(PARTNER, T0 + 4 * DAY + HOUR))
    worker = await audit.GetCaseAsSeen(seen_as(WORKER, T0 + 4 * DAY + HOUR))

    assert "assignment" in partner.entitlement.withheld_sections
    assert partner.state.status == audit_pb2.CASE_STATUS_UNSPECIFIED
    assert partner.state.events_applied == 0
    assert not partner.state.HasField("last_event_at")
    assert {"status", "events_applied", "last_event_at"} <= set(partner.entitlement.withheld_fields)
    # Not entitled to special-data values, the coordinator is not told of their events either:
    # the count and the last event's time took in a special-data service's.
    coordinator = await audit.GetCaseAsSeen(
        seen_as(COORDINATOR.user_id, T0 + 4 * DAY + HOUR, user_role="coordinator")
    )
    assert coordinator.state.events_applied == 0
    assert not coordinator.state.HasField("last_event_at")
    assert {"events_applied", "last_event_at"} <= set(coordinator.entitlement.withheld_fields)
    # Entitled to the whole record, the worker sees them.
    assert worker.state.status == audit_pb2.CASE_STATUS_ASSIGNED
    assert worker.state.events_applied > 0
    assert worker.state.HasField("last_event_at")
    assert not {"status", "events_applied", "last_event_at"} & set(
        worker.entitlement.withheld_fields
    )


async def test_a_service_names_no_referral_withheld_from_the_user_as_special_data(
    deps: AuditDeps,
    read_models: SqliteReadModelStore,
    registry: EventRegistry,
    issuer: TestIssuer,
) -> None:
    """A coordinator was shown no substance-use referral, and a counseling service booked from
    it named the referral all the same: an id no referral of the state has could only be a
    withheld one's. The state as they saw it names none, and says the link was withheld."""
    office = coordination()
    office.sequence = 100  # after history()'s coordination events of the case
    at = T0 + 2 * DAY + 5 * HOUR
    detox = ReferralMade(
        case_id=CASE,
        referral_id="ref-detox",
        provider=Provider(provider_id="harbor-counseling", name="Harbor Counseling"),
        need_category=NeedCategory.SUBSTANCE_USE,
        service="Detox support",
        urgency=Urgency.SOON,
        reason="Relapse",
        disclosure_basis=DisclosureBasis.CONSENT,
        consent_id=CONSENT,
    )
    counseling = ServiceScheduled(
        case_id=CASE,
        service_id="svc-counseling",
        kind=ServiceKind.COUNSELING,
        provider=detox.provider,
        starts_at=T0 + 11 * DAY,
        ends_at=T0 + 11 * DAY + HOUR,
        location=ServiceLocation(kind=LocationKind.CLIENT_HOME),
        referral_id="ref-detox",
    )
    events = [
        *history(),
        office.record(detox, occurred_at=at, actor=COORDINATOR),
        office.record(counseling, occurred_at=at + HOUR, actor=COORDINATOR),
    ]
    async with audit_over(events, deps, read_models, registry, issuer) as audit:
        coordinator = await audit.GetCaseAsSeen(
            seen_as(COORDINATOR.user_id, T0 + 4 * DAY, user_role="coordinator")
        )
        worker = await audit.GetCaseAsSeen(seen_as(WORKER, T0 + 4 * DAY))

    links = {s.service_id: s.referral_id for s in coordinator.state.services}
    assert [r.referral_id for r in coordinator.state.referrals] == ["ref-1"]
    assert links == {"svc-partner": "ref-1", "svc-own": "", "svc-counseling": ""}
    assert "services.referral_id" in coordinator.entitlement.withheld_fields
    # Entitled to special-data values, the worker sees the referral and the link.
    assert {s.service_id: s.referral_id for s in worker.state.services}["svc-counseling"] == (
        "ref-detox"
    )
    assert "services.referral_id" not in worker.entitlement.withheld_fields


async def test_the_plan_lists_no_goal_withheld_from_the_user_as_special_data(
    deps: AuditDeps,
    read_models: SqliteReadModelStore,
    registry: EventRegistry,
    issuer: TestIssuer,
) -> None:
    """A coordinator was shown no substance-use goal, yet the plan as they saw it listed its id
    among the goals the client agreed to: an id no goal of the state has could only be a
    withheld one's. It lists only the goals shown, and says the list was withheld from."""
    planning = Producer("casetrail/planning", f"case-{CASE}")
    at = T0 + 2 * DAY

    def aimed(goal_id: str, need: NeedCategory) -> Goal:
        return Goal(goal_id=goal_id, statement="...", term=GoalTerm.SHORT, need_category=need)

    events = [
        *history(),
        planning.record(
            PlanDrafted(
                case_id=CASE,
                plan_id="plan-1",
                goals=(
                    aimed("goal-walk", NeedCategory.HOME_CARE),
                    aimed("goal-sober", NeedCategory.SUBSTANCE_USE),
                ),
            ),
            occurred_at=at,
            actor=COORDINATOR,
        ),
        planning.record(
            PlanAgreed(
                case_id=CASE,
                plan_id="plan-1",
                plan_version=1,
                goal_ids=("goal-walk", "goal-sober"),
                signed_by_client=True,
            ),
            occurred_at=at + HOUR,
            actor=Actor(WORKER, Role.SOCIAL_WORKER),
        ),
    ]
    async with audit_over(events, deps, read_models, registry, issuer) as audit:
        coordinator = await audit.GetCaseAsSeen(
            seen_as(COORDINATOR.user_id, T0 + 4 * DAY, user_role="coordinator")
        )
        worker = await audit.GetCaseAsSeen(seen_as(WORKER, T0 + 4 * DAY))

    plan = coordinator.state.plan
    assert [goal.goal_id for goal in plan.goals] == ["goal-walk"]
    assert list(plan.agreed_goal_ids) == ["goal-walk"]
    assert "plan.agreed_goal_ids" in coordinator.entitlement.withheld_fields
    # Entitled to special-data values, the worker sees every goal agreed to.
    assert list(worker.state.plan.agreed_goal_ids) == ["goal-walk", "goal-sober"]
    assert "plan.agreed_goal_ids" not in worker.entitlement.withheld_fields


async def test_the_version_agreed_is_numbered_as_planning_showed_it_to_the_user(
    deps: AuditDeps,
    read_models: SqliteReadModelStore,
    registry: EventRegistry,
    issuer: TestIssuer,
) -> None:
    """Planning shows a coordinator a plan's versions without the changes of a goal withheld
    from them as special data: the plan as they saw it said the client agreed to version 2 of
    a plan whose every version they were shown was 1, telling of a withheld goal's addition.
    It numbers the version agreed as planning showed it to them; the worker's is the whole."""
    planning = Producer("casetrail/planning", f"case-{CASE}")
    at = T0 + 2 * DAY
    walk = Goal(
        goal_id="goal-walk",
        statement="...",
        term=GoalTerm.SHORT,
        need_category=NeedCategory.HOME_CARE,
    )
    sober = Goal(
        goal_id="goal-sober",
        statement="...",
        term=GoalTerm.SHORT,
        need_category=NeedCategory.SUBSTANCE_USE,
    )
    worker = Actor(WORKER, Role.SOCIAL_WORKER)
    events = [
        *history(),
        planning.record(
            PlanDrafted(case_id=CASE, plan_id="plan-1", goals=(walk,)), occurred_at=at, actor=worker
        ),
        planning.record(
            GoalAdded(case_id=CASE, plan_id="plan-1", goal=sober),
            occurred_at=at + HOUR,
            actor=worker,
        ),
        planning.record(
            PlanAgreed(
                case_id=CASE,
                plan_id="plan-1",
                plan_version=1,
                goal_ids=("goal-walk", "goal-sober"),
                signed_by_client=True,
            ),
            occurred_at=at + 2 * HOUR,
            actor=worker,
        ),
    ]
    async with audit_over(events, deps, read_models, registry, issuer) as audit:
        coordinators = await audit.GetCaseAsSeen(
            seen_as(COORDINATOR.user_id, T0 + 4 * DAY, user_role="coordinator")
        )
        workers = await audit.GetCaseAsSeen(seen_as(WORKER, T0 + 4 * DAY))

    assert coordinators.state.plan.agreed_version == 1
    assert workers.state.plan.agreed_version == 2


async def test_an_agreement_to_goals_withheld_from_the_user_alone_is_not_shown_them(
    deps: AuditDeps,
    read_models: SqliteReadModelStore,
    registry: EventRegistry,
    issuer: TestIssuer,
) -> None:
    """A plan whose one goal is a substance-use need, agreed to: the coordinator's state as
    they saw it held the plan agreed (version 1, signed) and the case planned, with no goal
    they were shown agreed to, where planning agrees no plan without one. Planning shows them
    that plan as never agreed, and so is it numbered here; the worker's is agreed."""
    planning = Producer("casetrail/planning", f"case-{CASE}")
    at = T0 + 2 * DAY
    sober = Goal(
        goal_id="goal-sober",
        statement="...",
        term=GoalTerm.SHORT,
        need_category=NeedCategory.SUBSTANCE_USE,
    )
    worker = Actor(WORKER, Role.SOCIAL_WORKER)
    drafted = planning.record(
        PlanDrafted(case_id=CASE, plan_id="plan-1", goals=(sober,)), occurred_at=at, actor=worker
    )
    agreed = planning.record(
        PlanAgreed(
            case_id=CASE,
            plan_id="plan-1",
            plan_version=1,
            goal_ids=("goal-sober",),
            signed_by_client=True,
        ),
        occurred_at=at + HOUR,
        actor=worker,
    )
    async with audit_over(
        [*history(), drafted, agreed], deps, read_models, registry, issuer
    ) as audit:
        coordinators = await audit.GetCaseAsSeen(
            seen_as(COORDINATOR.user_id, T0 + 4 * DAY, user_role="coordinator")
        )
        workers = await audit.GetCaseAsSeen(seen_as(WORKER, T0 + 4 * DAY))

    def agreement(state: audit_pb2.CaseState) -> tuple[object, ...]:
        plan = state.plan
        return state.status, plan.agreed_version, list(plan.agreed_goal_ids), plan.signed_by_client

    assert agreement(coordinators.state) == (audit_pb2.CASE_STATUS_ASSIGNED, 0, [], False)
    assert agreement(workers.state) == (audit_pb2.CASE_STATUS_PLANNED, 1, ["goal-sober"], True)


async def test_a_state_lists_what_grows_with_the_case_within_caps_and_says_how_many(
    audit: audit_pb2_grpc.AuditServiceAsyncStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every service, referral, consent and hold of a case was listed: a case served daily for
    years took its state (as of any later moment, or as a user saw it) past gRPC's 4 MiB, never
    to be read again."""
    monkeypatch.setattr(responses, "STATE_SERVICES", Cap(1, 1024 * 1024))
    as_of = stamp(T0 + 6 * DAY)
    state = await audit.GetCaseStateAsOf(
        audit_pb2.GetCaseStateAsOfRequest(
            context=as_(), case_id=CASE, as_of=as_of, basis=audit_pb2.TIME_BASIS_RECORDED
        )
    )
    seen = await audit.GetCaseAsSeen(seen_as(WORKER, T0 + 6 * DAY))

    for answer in (state.state, seen.state):
        assert [s.service_id for s in answer.services] == ["svc-partner"]
        assert (answer.services_total, answer.services_truncated) == (2, True)
        assert (answer.referrals_total, answer.referrals_truncated) == (1, False)
    assert [c.consent_id for c in state.state.consents] == [CONSENT]
    assert (state.state.consents_total, state.state.consents_truncated) == (1, False)
