"""Intake's handlers against a real SQLite store and read models."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from uuid import uuid4

import pytest

from casetrail_platform.commands import (
    CommandContext,
    InvalidCommand,
    NotAllowed,
    NotCaughtUp,
    NotFound,
    RuleBroken,
    VersionConflict,
)
from casetrail_platform.decide import published_at_once
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.guard import AccessControl, AccessDenied, access_stream
from casetrail_platform.projections.runner import BusProjectionHandler
from casetrail_platform.projections.sqlite import SqliteReadModelStore
from casetrail_platform.queries import QueryContext
from casetrail_platform.store.port import NO_STREAM
from casetrail_platform.store.sqlite import SqliteEventStore
from events.catalog.access import AccessPurpose, RecordAccessDenied
from events.catalog.base import Role
from events.catalog.clients import ClientRegistered, PersonalIdentifier, PersonName
from events.envelope import Actor, EventMetadata, NewEvent
from services.intake.adapters.case_closures import ClosureLog
from services.intake.adapters.client_directory import ClientDirectory
from services.intake.app import handlers, queries
from services.intake.app.commands import (
    ContactInput,
    FindDuplicates,
    GrantConsent,
    IdentifierInput,
    NameInput,
    OpenCase,
    PresentingNeedInput,
    RecipientInput,
    ReferralSourceInput,
    RegisterClient,
    ReopenCase,
    RevokeConsent,
)
from services.intake.domain.cases import case_stream
from services.intake.domain.clients import client_stream
from services.intake.domain.errors import PossibleDuplicateClient
from tests.support.publication import HeldPublication
from tests.unit.intake.support import (
    assess,
    caller,
    closed_by_planning,
    context,
    marco,
    open_a_case,
    opening,
    register,
)

NATIONAL = IdentifierInput(scheme="national_id", value="BLLMRC41H02F205X")


async def test_registering_a_client(store: SqliteEventStore, directory: ClientDirectory) -> None:
    registration = await register(store, directory, marco(identifiers=(NATIONAL,)))
    assert registration.recorded.version == 1
    assert registration.acknowledged_duplicates == ()
    client = await queries.get_client(store, registration.recorded.subject_id)
    assert client.registration.name.family_name == "Bellini"
    assert client.registration.date_of_birth == date(1941, 6, 2)


async def test_a_name_with_an_invisible_mark_is_refused_as_the_same_person(
    store: SqliteEventStore, directory: ClientDirectory
) -> None:
    """A combining grapheme joiner, a variation selector or a Hangul filler shows nothing, yet
    is no format character (Cf) nor a mark ``unicodedata.combining`` tells: "Giu\u034flia"
    registered as a new person beside Giulia (before: no duplicate refusal)."""
    first = await register(store, directory, marco(given="Giulia"))
    for given in ("Giu\u034flia", "Giulia\ufe0f", "Giu\U000e0100lia", "Giu\u180blia"):
        with pytest.raises(PossibleDuplicateClient) as refused:
            await register(store, directory, marco(given=given))
        assert [c.client_id for c in refused.value.candidates] == [first.recorded.subject_id]


async def test_same_folded_name_and_birth_date_is_refused_with_the_candidate(
    store: SqliteEventStore, directory: ClientDirectory
) -> None:
    first = await register(store, directory, marco())
    before = await store.last_position()
    with pytest.raises(PossibleDuplicateClient) as refused:
        await register(store, directory, marco(given=" MARCO", family="Bellìni"))
    assert [c.client_id for c in refused.value.candidates] == [first.recorded.subject_id]
    assert refused.value.candidates[0].same_name_and_date_of_birth
    assert await store.last_position() == before


async def test_an_identical_identifier_is_refused(
    store: SqliteEventStore, directory: ClientDirectory
) -> None:
    first = await register(store, directory, marco(identifiers=(NATIONAL,)))
    with pytest.raises(PossibleDuplicateClient) as refused:
        await register(store, directory, marco(given="Anna", birth=None, identifiers=(NATIONAL,)))
    candidate = refused.value.candidates[0]
    assert candidate.client_id == first.recorded.subject_id
    assert not candidate.same_name_and_date_of_birth
    assert candidate.shared_identifiers[0].value == NATIONAL.value


async def test_a_namesake_born_another_day_is_registered(
    store: SqliteEventStore, directory: ClientDirectory
) -> None:
    await register(store, directory, marco())
    other = await register(store, directory, marco(birth="1950-01-01"))
    assert other.acknowledged_duplicates == ()


async def test_confirmed_not_duplicate_registers_and_reports_what_was_set_aside(
    store: SqliteEventStore, directory: ClientDirectory
) -> None:
    first = await register(store, directory, marco())
    second = await register(store, directory, marco(confirmed=True))
    assert second.recorded.subject_id != first.recorded.subject_id
    assert [c.client_id for c in second.acknowledged_duplicates] == [first.recorded.subject_id]


async def test_the_registration_records_whom_the_person_is_not(
    store: SqliteEventStore, directory: ClientDirectory
) -> None:
    first = await register(store, directory, marco())
    alone = await register(store, directory, marco(birth="1950-01-01", confirmed=True))
    second = await register(store, directory, marco(confirmed=True))

    async def stored(registration: handlers.Registration) -> ClientRegistered:
        [recorded] = await store.read_stream(client_stream(registration.recorded.subject_id))
        assert isinstance(recorded.event, ClientRegistered)
        return recorded.event

    assert (await stored(first)).confirmed_not_duplicate_of == ()
    # Confirmed, but no one looked alike: there is no one to name.
    assert (await stored(alone)).confirmed_not_duplicate_of == ()
    assert (await stored(second)).confirmed_not_duplicate_of == (first.recorded.subject_id,)


async def test_a_retry_returns_the_first_result_and_writes_nothing(
    store: SqliteEventStore, directory: ClientDirectory
) -> None:
    first = await register(store, directory, marco())
    ctx = context(Role.RECEPTIONIST, key="registration-42")
    confirmed = await register(store, directory, marco(confirmed=True), ctx)
    # a third namesake arrives after it; the retry must still answer as the first attempt did
    await register(store, directory, marco(confirmed=True))
    position = await store.last_position()
    retried = await register(store, directory, marco(confirmed=True), ctx)
    assert retried == confirmed
    assert [c.client_id for c in retried.acknowledged_duplicates] == [first.recorded.subject_id]
    assert await store.last_position() == position


async def test_racing_registrations_of_one_person_do_not_both_succeed(
    store: SqliteEventStore, directory: ClientDirectory
) -> None:
    outcomes = await asyncio.gather(
        *(register(store, directory, marco(identifiers=(NATIONAL,))) for _ in range(5)),
        return_exceptions=True,
    )
    registered = [o for o in outcomes if isinstance(o, handlers.Registration)]
    refused = [o for o in outcomes if isinstance(o, PossibleDuplicateClient)]
    assert len(registered) == 1
    assert len(refused) == 4
    winner = registered[0].recorded.subject_id
    assert all(r.candidates[0].client_id == winner for r in refused)


async def test_a_restarted_directory_still_knows_every_client(
    store: SqliteEventStore, directory: ClientDirectory
) -> None:
    await register(store, directory, marco())
    restarted = ClientDirectory(store, directory._read_models)
    with pytest.raises(PossibleDuplicateClient):
        await register(store, restarted, marco())


async def test_bad_fields_are_named_as_in_the_request(
    store: SqliteEventStore, directory: ClientDirectory
) -> None:
    command = RegisterClient(
        name=NameInput(given_names="  "),
        date_of_birth="2 June 1941",
        identifiers=(NATIONAL, NATIONAL),
        contact=ContactInput(email="not-an-address"),
    )
    with pytest.raises(InvalidCommand) as refused:
        await register(store, directory, command)
    fields = {violation.field for violation in refused.value.violations}
    assert fields == {"name.given_names", "date_of_birth", "identifiers", "contact.email"}
    assert await store.last_position() == 0


async def test_a_birth_date_in_the_future_is_refused(
    store: SqliteEventStore, directory: ClientDirectory
) -> None:
    with pytest.raises(InvalidCommand) as refused:
        await register(store, directory, marco(birth="2030-01-01"))
    assert refused.value.violations[0].field == "date_of_birth"


async def test_the_role_is_checked_first(
    store: SqliteEventStore, directory: ClientDirectory
) -> None:
    with pytest.raises(NotAllowed):
        await register(store, directory, marco(given=""), context(Role.SOCIAL_WORKER))


async def test_a_case_opens_for_a_registered_client_only(
    store: SqliteEventStore, directory: ClientDirectory
) -> None:
    with pytest.raises(NotFound):
        await handlers.open_case(store, context(), opening("nobody"))
    client = await register(store, directory, marco())
    ctx = context(key="open-1")
    opened = await handlers.open_case(store, ctx, opening(client.recorded.subject_id))
    assert opened.version == 1
    assert await handlers.open_case(store, ctx, opening(client.recorded.subject_id)) == opened


async def test_unknown_need_category_names_the_field(
    store: SqliteEventStore, directory: ClientDirectory
) -> None:
    client = await register(store, directory, marco())
    command = OpenCase(
        client_id=client.recorded.subject_id,
        referral_source=ReferralSourceInput(kind="hospital"),
        presenting_needs=(PresentingNeedInput(category="sunshine"),),
    )
    with pytest.raises(InvalidCommand) as refused:
        await handlers.open_case(store, context(), command)
    assert refused.value.violations[0].field == "presenting_needs[0].category"
    assert "housing" in refused.value.violations[0].problem


async def test_assessing_a_case(
    store: SqliteEventStore, directory: ClientDirectory, closures: ClosureLog, access: AccessControl
) -> None:
    case_id = await open_a_case(store, directory)
    ctx = context(key="assess-1")
    recorded, assessment_id = await assess(store, closures, access, case_id, ctx)
    assert recorded.version == 2
    again = await assess(store, closures, access, case_id, ctx)
    assert again == (recorded, assessment_id)
    with pytest.raises(RuleBroken) as refused:
        await assess(store, closures, access, case_id)
    assert refused.value.rule == "INITIAL_ASSESSMENT_ALREADY_RECORDED"


async def test_the_receptionist_does_not_assess(
    store: SqliteEventStore, directory: ClientDirectory, closures: ClosureLog, access: AccessControl
) -> None:
    case_id = await open_a_case(store, directory)
    with pytest.raises(NotAllowed):
        await assess(store, closures, access, case_id, context(Role.RECEPTIONIST))


async def test_a_stale_expected_version_is_a_conflict(
    store: SqliteEventStore, directory: ClientDirectory, closures: ClosureLog, access: AccessControl
) -> None:
    case_id = await open_a_case(store, directory)
    stale = CommandContext(actor=context().actor, idempotency_key="k", expected_version=3)
    with pytest.raises(VersionConflict):
        await assess(store, closures, access, case_id, stale)


async def test_reopening_follows_a_closure_learnt_from_the_bus(
    store: SqliteEventStore,
    directory: ClientDirectory,
    closures: ClosureLog,
    access: AccessControl,
    from_bus: BusProjectionHandler,
) -> None:
    case_id = await open_a_case(store, directory)
    await assess(store, closures, access, case_id)
    reopen = ReopenCase(case_id=case_id, reason="New fall in January")
    coordinator = context(Role.COORDINATOR)
    with pytest.raises(RuleBroken) as refused:
        await handlers.reopen_case(store, closures, coordinator, reopen, published_at_once)
    assert refused.value.rule == "CASE_NOT_CLOSED"

    closure = closed_by_planning(case_id, sequence=7)
    await from_bus(closure)
    await from_bus(closure)  # redelivered by the bus: still one closure
    with pytest.raises(RuleBroken) as closed:
        await assess(store, closures, access, case_id)
    assert closed.value.rule == "CASE_CLOSED"

    reopened = await handlers.reopen_case(store, closures, coordinator, reopen, published_at_once)
    assert reopened.version == 3
    with pytest.raises(RuleBroken):
        await handlers.reopen_case(
            store, closures, context(Role.SUPERVISOR), reopen, published_at_once
        )
    await assess(store, closures, access, case_id)

    auditor = Principal("user-auditor", Role.AUDITOR, access.home_agency, "test")
    view, _ = await queries.get_case(
        store, closures, access, auditor, AccessPurpose.CONFIDENTIALITY_REVIEW, case_id
    )
    assert view.status == "open"
    assert len(view.case.assessments) == 2
    assert [c.reason for c in view.closures] == ["goals_achieved"]
    assert view.client is not None


async def test_the_supervisor_reopens_but_the_case_manager_does_not(
    store: SqliteEventStore,
    directory: ClientDirectory,
    closures: ClosureLog,
    from_bus: BusProjectionHandler,
) -> None:
    case_id = await open_a_case(store, directory)
    await from_bus(closed_by_planning(case_id, sequence=3))
    reopen = ReopenCase(case_id=case_id, reason="Back in hospital")
    with pytest.raises(NotAllowed):
        await handlers.reopen_case(
            store, closures, context(Role.CASE_MANAGER), reopen, published_at_once
        )
    await handlers.reopen_case(store, closures, context(Role.SUPERVISOR), reopen, published_at_once)


async def test_a_reopening_stating_no_moment_does_not_come_before_the_closure_stated_ahead(
    store: SqliteEventStore,
    directory: ClientDirectory,
    closures: ClosureLog,
    from_bus: BusProjectionHandler,
) -> None:
    """A command stating no moment happens now, checked as one stating it is: any moment may
    be stated a few minutes ahead, and a reopening sent then stating none was recorded before
    the closure it reopens (audit's state as of now showed the reopened case closed)."""
    case_id = await open_a_case(store, directory)
    closed_at = datetime.now(UTC) + timedelta(minutes=4)
    await from_bus(closed_by_planning(case_id, sequence=3, occurred_at=closed_at))
    reopen = ReopenCase(case_id=case_id, reason="Back in hospital")
    before = await store.read_stream(case_stream(case_id))

    with pytest.raises(InvalidCommand) as refused:
        await handlers.reopen_case(
            store, closures, context(Role.SUPERVISOR), reopen, published_at_once
        )

    [problem] = refused.value.violations
    assert problem.field == "context.occurred_at"
    assert f"case {case_id} was last closed ({closed_at.isoformat()})" in problem.problem
    assert f"state a moment at or after {closed_at.isoformat()}" in problem.problem
    assert await store.read_stream(case_stream(case_id)) == before
    stated = CommandContext(context(Role.SUPERVISOR).actor, "reopen", occurred_at=closed_at)
    await handlers.reopen_case(store, closures, stated, reopen, published_at_once)


async def test_finding_possible_duplicates(
    store: SqliteEventStore, directory: ClientDirectory, access: AccessControl
) -> None:
    first = await register(store, directory, marco(identifiers=(NATIONAL,)))
    reader = QueryContext(context(Role.RECEPTIONIST).actor, AccessPurpose.DIRECT_CARE)
    principal = Principal(reader.actor.user_id, Role.RECEPTIONIST, access.home_agency, "test")
    by_name = FindDuplicates(name=NameInput("marco", "BELLINI"), date_of_birth="1941-06-02")
    by_identifier = FindDuplicates(identifiers=(NATIONAL,))
    for query in (by_name, by_identifier):
        found, disclosures, _ = await queries.find_possible_duplicates(
            store, directory, access, principal, reader, query
        )
        assert [c.client_id for c in found] == [first.recorded.subject_id]
        assert [d.case_id for d in disclosures] == [first.recorded.subject_id]
        assert all(d.decision.rule == "front-desk" for d in disclosures)
    with pytest.raises(InvalidCommand) as refused:
        await queries.find_possible_duplicates(
            store, directory, access, principal, reader, FindDuplicates(name=NameInput("Marco"))
        )
    assert refused.value.violations[0].field == "identifiers"


async def test_duplicates_the_policy_refuses_are_withheld_and_the_refusal_recorded(
    store: SqliteEventStore, directory: ClientDirectory, access: AccessControl
) -> None:
    first = await register(store, directory, marco(identifiers=(NATIONAL,)))
    client_id = first.recorded.subject_id
    reader = QueryContext(context(Role.RECEPTIONIST).actor, AccessPurpose.DIRECT_CARE)
    outsider = Principal(reader.actor.user_id, Role.RECEPTIONIST, "another-agency", "test")
    query = FindDuplicates(identifiers=(NATIONAL,))
    found, disclosures, _ = await queries.find_possible_duplicates(
        store, directory, access, outsider, reader, query
    )
    assert (found, disclosures) == ([], [])
    (denied,) = await store.read_stream(access_stream(client_id))
    assert isinstance(denied.event, RecordAccessDenied)
    assert denied.event.rule == "no-relationship"

    machine = Principal("relay-1", Role.SYSTEM, access.home_agency, "test")
    with pytest.raises(AccessDenied):
        await queries.find_possible_duplicates(store, directory, access, machine, reader, query)
    (refusal,) = await store.read_stream(access_stream(queries.CLIENT_SEARCH))
    assert isinstance(refusal.event, RecordAccessDenied)
    assert refusal.event.rule == "role-not-allowed"


async def test_unknown_client_and_case_are_not_found(
    store: SqliteEventStore, closures: ClosureLog, access: AccessControl
) -> None:
    with pytest.raises(NotFound):
        await queries.get_client(store, "nobody")
    with pytest.raises(NotFound):
        await queries.get_case(
            store,
            closures,
            access,
            Principal("user-auditor", Role.AUDITOR, access.home_agency, "test"),
            AccessPurpose.CONFIDENTIALITY_REVIEW,
            "nothing",
        )


async def test_invisible_characters_cannot_hide_a_duplicate_identifier(
    store: SqliteEventStore, directory: ClientDirectory
) -> None:
    """Names fold invisible format characters away (``matching.fold``); identifiers are matched
    as typed, so one pasted with a zero-width space (or a name with nothing visible in it) is
    refused naming the field, never registered beside the person it would hide (before: the
    second registration, and a search for it, went through)."""
    await register(store, directory, marco(identifiers=(NATIONAL,)))
    before = await store.last_position()
    hidden = IdentifierInput(scheme=NATIONAL.scheme, value=f"{NATIONAL.value}\u200b")
    for command in (
        marco(given="Anna", birth=None, identifiers=(hidden,)),
        *(
            marco(given="Anna", birth=None, identifiers=(IdentifierInput(NATIONAL.scheme, v),))
            for v in (
                f"{NATIONAL.value}\u034f",
                f"{NATIONAL.value}\ufe0f",
                f"\u3164{NATIONAL.value}",
            )
        ),
        marco(given="\u200b", identifiers=(NATIONAL,)),
        marco(given="\u3164", identifiers=(NATIONAL,)),
        marco(family="\u0301", identifiers=(NATIONAL,)),
    ):
        with pytest.raises(InvalidCommand) as refused:
            await register(store, directory, command)
        [violation] = refused.value.violations
        assert violation.field in {"identifiers[0].value", "name.given_names", "name.family_name"}
        assert NATIONAL.value not in violation.problem
    assert await store.last_position() == before
    with pytest.raises(InvalidCommand) as refused:
        queries.probe_from(FindDuplicates(identifiers=(hidden,)))
    assert [v.field for v in refused.value.violations] == ["identifiers[0].value"]


async def test_a_control_character_hides_no_duplicate(
    store: SqliteEventStore, directory: ClientDirectory
) -> None:
    """A C1 control (U+0080-U+009F, category Cc) shows nothing, as a format character does:
    in a name it folds away, in an identifier it is refused naming the field (before: "Mar\x80co
    Bellini" registered beside Marco Bellini, and an identifier with one beside the client it
    names, with no duplicate refusal)."""
    first = await register(store, directory, marco(identifiers=(NATIONAL,)))
    with pytest.raises(PossibleDuplicateClient) as refused:
        await register(store, directory, marco(given="Mar\u0080co"))
    assert [c.client_id for c in refused.value.candidates] == [first.recorded.subject_id]
    hidden = IdentifierInput(scheme=NATIONAL.scheme, value=f"{NATIONAL.value}\u0081")
    with pytest.raises(InvalidCommand) as invisible:
        await register(store, directory, marco(given="Anna", birth=None, identifiers=(hidden,)))
    assert [v.field for v in invisible.value.violations] == ["identifiers[0].value"]
    with pytest.raises(InvalidCommand) as searched:
        queries.probe_from(FindDuplicates(identifiers=(hidden,)))
    assert [v.field for v in searched.value.violations] == ["identifiers[0].value"]


async def test_a_client_stored_with_a_control_character_is_found_by_the_rebuilt_directory(
    store: SqliteEventStore, directory: ClientDirectory
) -> None:
    """A registration stored before the edge refused C1 controls, one in its name and one in
    its identifier: the directory (rebuilt under its new name) matches it without them."""
    stored = ClientRegistered(
        client_id="c-stored",
        name=PersonName(given_names="Mar\u0080co", family_name="Bellini"),
        date_of_birth=date(1941, 6, 2),
        identifiers=(PersonalIdentifier(scheme=NATIONAL.scheme, value=f"{NATIONAL.value}\u0081"),),
    )
    metadata = EventMetadata(
        handlers.SOURCE, Actor("reception", Role.RECEPTIONIST), datetime.now(UTC), uuid4()
    )
    await store.append(client_stream("c-stored"), [NewEvent(stored, metadata)], NO_STREAM)
    for command in (marco(), marco(given="Anna", birth=None, identifiers=(NATIONAL,))):
        with pytest.raises(PossibleDuplicateClient) as refused:
            await register(store, directory, command)
        assert [c.client_id for c in refused.value.candidates] == ["c-stored"]


async def test_a_consent_and_its_revocation_are_answered_once_the_bus_has_them(
    store: SqliteEventStore,
    directory: ClientDirectory,
    read_models: SqliteReadModelStore,
    access: AccessControl,
) -> None:
    """A referral at coordination and the partner agency's reads in every service are decided
    on facts holding what the bus has: from the answer on, they are decided with the consent,
    then with its revocation (``IntakeDeps.published``)."""
    case_id = await open_a_case(store, directory)
    publication = HeldPublication()
    granting = context(Role.COORDINATOR, "consent")
    consent = GrantConsent(
        case_id,
        RecipientInput("agency", "sunrise-home-care", "Sunrise Home Care"),
        "coordination",
        ("identity", "referrals"),
        (),
        datetime.now(UTC) + timedelta(days=30),
        "scan://consents/1.pdf",
    )
    now = datetime.now(UTC)
    _, consent_id = await publication.answered_once_acknowledged(
        store,
        case_stream(case_id),
        lambda: handlers.grant_consent(
            store,
            ClosureLog(read_models),
            access,
            caller(granting),
            granting,
            consent,
            now,
            publication.published,
        ),
    )
    revoking = context(Role.COORDINATOR, "revoke")
    revocation = RevokeConsent(case_id, consent_id, "Client changed her mind")
    await publication.answered_once_acknowledged(
        store,
        case_stream(case_id),
        lambda: handlers.revoke_consent(
            store,
            ClosureLog(read_models),
            access,
            caller(revoking),
            revoking,
            revocation,
            publication.published,
        ),
    )


async def test_a_reopening_waits_for_the_closures_the_bus_holds(
    store: SqliteEventStore,
    directory: ClientDirectory,
    read_models: SqliteReadModelStore,
    from_bus: BusProjectionHandler,
) -> None:
    """Planning answers a closure once it is on the bus: a reopening sent after that answer
    finds it (the closures' group catches up here when asked, as it would while the reopening
    waits), and is answered once the bus has the reopening, a retry too."""
    case_id = await open_a_case(store, directory)
    asked: list[str] = []

    async def caught_up(asked_about: str) -> bool:
        asked.append(asked_about)
        await from_bus(closed_by_planning(case_id, sequence=4))
        return True

    closures = ClosureLog(read_models, caught_up)
    publication = HeldPublication()
    reopen = ReopenCase(case_id=case_id, reason="New fall in January")
    coordinator = context(Role.COORDINATOR, "reopen")
    reopened = await publication.answered_once_acknowledged(
        store,
        case_stream(case_id),
        lambda: handlers.reopen_case(store, closures, coordinator, reopen, publication.published),
    )
    assert reopened.version == 2
    assert asked == [case_id, case_id]


async def test_a_reopening_whose_closures_trail_decides_nothing(
    store: SqliteEventStore, directory: ClientDirectory, read_models: SqliteReadModelStore
) -> None:
    case_id = await open_a_case(store, directory)

    async def behind(case_id: str) -> bool:
        return False

    reopen = ReopenCase(case_id=case_id, reason="New fall in January")
    with pytest.raises(NotCaughtUp):
        await handlers.reopen_case(
            store,
            ClosureLog(read_models, behind),
            context(Role.COORDINATOR),
            reopen,
            published_at_once,
        )
    assert await store.stream_version(case_stream(case_id)) == 1


async def test_an_assessment_waits_for_the_closures_the_bus_holds(
    store: SqliteEventStore,
    directory: ClientDirectory,
    read_models: SqliteReadModelStore,
    from_bus: BusProjectionHandler,
    access: AccessControl,
) -> None:
    """An assessment sent right after planning answered the case's closure is decided on it
    (the closures' group catches up here when asked), as a reopening is: refused, not recorded
    on the closed case."""
    case_id = await open_a_case(store, directory)

    async def caught_up(asked_about: str) -> bool:
        await from_bus(closed_by_planning(case_id, sequence=4))
        return True

    with pytest.raises(RuleBroken) as refused:
        await assess(store, ClosureLog(read_models, caught_up), access, case_id)
    assert refused.value.rule == "CASE_CLOSED"
    assert await store.stream_version(case_stream(case_id)) == 1


async def test_an_assessment_whose_closures_trail_decides_nothing(
    store: SqliteEventStore,
    directory: ClientDirectory,
    read_models: SqliteReadModelStore,
    access: AccessControl,
) -> None:
    case_id = await open_a_case(store, directory)

    async def behind(case_id: str) -> bool:
        return False

    with pytest.raises(NotCaughtUp) as raised:
        await assess(store, ClosureLog(read_models, behind), access, case_id)
    assert raised.value.subject == case_id
    assert await store.stream_version(case_stream(case_id)) == 1


async def test_a_retried_assessment_is_answered_while_the_closures_trail(
    store: SqliteEventStore,
    directory: ClientDirectory,
    read_models: SqliteReadModelStore,
    access: AccessControl,
) -> None:
    """A retry of an assessment already recorded gets its first answer without waiting for the
    case's closures: the log trailing the bus changes nothing it did."""
    case_id = await open_a_case(store, directory)
    retried = context()
    first = await assess(store, ClosureLog(read_models), access, case_id, retried)

    async def never(case_id: str) -> bool:
        return False

    again = await assess(store, ClosureLog(read_models, never), access, case_id, retried)
    assert again == first
    assert await store.stream_version(case_stream(case_id)) == 2
