"""Intake's command handlers: check the role, build the catalog event, decide, append.

The ``*_of`` functions build and check the event a command asks for, without I/O; the gRPC
entrypoint runs them too, to refuse a request's bad fields together with its context's.

Duplicate clients and racing registrations: a client's stream is new for every registration, so
the store's optimistic concurrency cannot see two registrations of the same person. Instead
``register_client`` holds the locks of the registration's match keys (``ClientDirectory.
registering``) while it brings the directory up to date, searches it and appends. The locks are
shared by every intake replica, so the second of two racing registrations of the same person
sees the first and is refused ALREADY_EXISTS, whichever replicas took them.

A client's erasure and the commands on their cases: an erasure is appended to the client's
stream, a command on a case to the case's. A command that must be refused once the client is
erased (opening a case, an assessment, a reopening, a consent, an emergency access) reads the
client's stream through ``ClientErasure``, whose read is ``execute``'s guard: the case's append
is written only if the client's stream has not moved since, so an erasure committed between the
read and the append makes the command read again and be refused CLIENT_ERASED.

An erasure names the client's cases (``client.erased``'s ``case_ids``: the other services erase
what their read models copied of those cases, and only those). A case opened after the erasure
read them but committed before its append would be missed (a new case's stream is not the
client's, so neither append sees the other): an erasure holds the client's lock
(``client_cases_lock``, shared by every replica) from its look at the cases to its append, and
an opening's append holds it shared in its own transaction (``StreamVersion.lock``: no lock
session, no extra round trip), so it commits before that look or is refused until the erasure
has committed, then reads the erasure and is refused CLIENT_ERASED.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime

from casetrail_platform.commands import (
    CommandContext,
    InvalidCommand,
    NotCaughtUp,
    NotFound,
    derived_id,
)
from casetrail_platform.decide import Published, execute, once_published, recorded_before
from casetrail_platform.identity.principal import Principal
from casetrail_platform.keys.keyring import ClientErasedError, ClientKeyring
from casetrail_platform.locking.port import Locks
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.vocabulary import Action as PolicyAction
from casetrail_platform.store.port import EventStore, StreamVersion
from events.catalog.access import ConsentGranted, ConsentRevoked
from events.catalog.assessment import InitialAssessmentRecorded
from events.catalog.cases import CaseOpened, CaseReopened
from events.catalog.clients import ClientRegistered
from events.catalog.erasure import ClientErased, RetentionHoldPlaced, RetentionHoldReleased
from events.envelope import RecordedEvent
from events.errors import FieldProblem
from services.intake.adapters.case_closures import Closure, ClosureLog
from services.intake.adapters.client_directory import ClientDirectory
from services.intake.app.commands import (
    EraseClient,
    GrantConsent,
    OpenCase,
    PlaceRetentionHold,
    RecordInitialAssessment,
    RegisterClient,
    ReleaseRetentionHold,
    ReopenCase,
    RevokeConsent,
)
from services.intake.app.validation import build, fields_of
from services.intake.domain.cases import (
    case_from,
    case_stream,
    check_factors,
    decide_assessment,
    decide_opening,
    decide_reopening,
)
from services.intake.domain.clients import (
    acknowledged_before,
    check_date_of_birth,
    client_from,
    client_stream,
    decide_registration,
    probe_of,
)
from services.intake.domain.consents import check_consent, decide_consent, decide_revocation
from services.intake.domain.erasure import (
    check_hold_until,
    client_record,
    decide_erasure,
    decide_hold,
    decide_release,
)
from services.intake.domain.matching import DuplicateCandidate, check_matchable
from services.intake.domain.permissions import Action, require_role

SOURCE = "casetrail/intake"
UNCHECKED_CLIENT = "unchecked"
"""The client id a case's event is checked with before the case is read for its client."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a command recorded: the same on a retry."""

    subject_id: str
    version: int
    event_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Registration:
    recorded: Recorded
    acknowledged_duplicates: tuple[DuplicateCandidate, ...]


def registration_of(
    context: CommandContext, command: RegisterClient, today: date
) -> ClientRegistered:
    """The registration ``command`` asks for, checked (possible duplicates are looked at later)."""
    registration = build(
        ClientRegistered,
        {
            "client_id": derived_id(context, SOURCE, "client"),
            **fields_of(command, "confirmed_not_duplicate"),
        },
    )
    check_date_of_birth(registration.date_of_birth, today)
    check_matchable(probe_of(registration))
    return registration


async def register_client(
    store: EventStore,
    directory: ClientDirectory,
    context: CommandContext,
    command: RegisterClient,
    today: date,
    checked: ClientRegistered | None = None,
) -> Registration:
    """``checked``: the registration already built by ``registration_of`` (an entrypoint that
    validated the request with it passes it on rather than building it twice)."""
    require_role(context.actor.role, Action.REGISTER_CLIENT)
    registration = checked or registration_of(context, command, today)
    async with directory.registering(probe_of(registration)):
        await directory.refresh()
        earlier = await recorded_before(store, SOURCE, context)
        if earlier is not None:
            return await _first_registration(store, directory, earlier)
        found = (await directory.candidates(probe_of(registration))).candidates
        recorded = await execute(
            store,
            SOURCE,
            context,
            client_stream(registration.client_id),
            lambda history: decide_registration(
                history, registration, found, command.confirmed_not_duplicate
            ),
        )
        # No catching up again here: the next registration that could match this one holds
        # the same lock and catches the directory up itself before it searches.
    return Registration(recorded_of(registration.client_id, recorded), tuple(found))


async def _first_registration(
    store: EventStore, directory: ClientDirectory, earlier: Sequence[RecordedEvent]
) -> Registration:
    """A retry answers as the first attempt did: the clients its registration records the
    person is not, as their records stood before it (``acknowledged_before``), whatever
    corrections have made of them since. A registration stored before it recorded them
    (``_records_whom_not``) is answered by the search, among the clients registered before."""
    first = earlier[0]
    registration = first.event
    assert isinstance(registration, ClientRegistered)
    answer = recorded_of(registration.client_id, earlier)
    probe = probe_of(registration)
    if not _records_whom_not(first):
        found = await directory.candidates(
            probe, excluding=registration.client_id, registered_before=first.position
        )
        return Registration(answer, found.candidates)
    acknowledged = [
        acknowledged_before(
            probe, await store.read_stream(client_stream(client_id)), first.position
        )
        for client_id in registration.confirmed_not_duplicate_of
    ]
    return Registration(answer, tuple(found for found in acknowledged if found is not None))


def _records_whom_not(registration: RecordedEvent) -> bool:
    """Whether ``registration`` was stored recording whom the person is not
    (``confirmed_not_duplicate_of``, since ``ClientRegistered`` v2): a v1 one reads as
    confirming no one, whoever its first attempt acknowledged."""
    stored = registration.stored_form
    return stored is None or stored.schema_version >= 2


def opening_of(context: CommandContext, command: OpenCase) -> CaseOpened:
    return build(CaseOpened, {"case_id": derived_id(context, SOURCE, "case"), **fields_of(command)})


def client_cases_lock(client_id: str) -> str:
    """The lock an erasure of the client and the opening of a case of theirs hold."""
    return f"intake.client.cases:{client_id}"


async def open_case(
    store: EventStore,
    context: CommandContext,
    command: OpenCase,
    checked: CaseOpened | None = None,
) -> Recorded:
    """``checked``: the event already built by ``opening_of``, if the caller has it."""
    require_role(context.actor.role, Action.OPEN_CASE)
    opened = checked or opening_of(context, command)
    client_history = await store.read_stream(client_stream(opened.client_id))
    if client_from(client_history) is None:
        raise NotFound("client", opened.client_id)
    # The append holds the client's lock shared: an erasure deciding meanwhile makes it read
    # again until the erasure has committed, then refuse; one already past its append waits.
    erasure = ClientErasure(store, opened.client_id, lock=client_cases_lock(opened.client_id))
    recorded = await execute(
        store,
        SOURCE,
        context,
        case_stream(opened.case_id),
        lambda history: decide_opening(history, opened, erasure.erased),
        guard=erasure.read,
    )
    return recorded_of(opened.case_id, recorded)


def assessment_of(
    context: CommandContext, command: RecordInitialAssessment
) -> InitialAssessmentRecorded:
    assessment = build(
        InitialAssessmentRecorded,
        {"assessment_id": derived_id(context, SOURCE, "assessment"), **fields_of(command)},
    )
    check_factors(assessment.factors)
    return assessment


async def record_initial_assessment(
    store: EventStore,
    closures: ClosureLog,
    access: AccessControl,
    principal: Principal,
    context: CommandContext,
    command: RecordInitialAssessment,
    checked: InitialAssessmentRecorded | None = None,
) -> tuple[Recorded, str]:
    """Returns what was recorded and the assessment's id. ``checked``: the event already built
    by ``assessment_of``, if the caller has it. A case manager or social worker records it only
    on the case assigned to them (``AccessControl.require_case_work``, before anything tells
    whether the case exists). Decided on the closures the bus holds of the case, as a
    reopening is: an assessment sent after planning answered a closure is refused. A retry of
    one recorded gets its first answer without waiting for them (``recorded_before``): a
    closure since, a transfer since, or a log trailing, changes nothing it did."""
    require_role(context.actor.role, Action.RECORD_ASSESSMENT)
    assessment = checked or assessment_of(context, command)
    earlier = await recorded_before(store, SOURCE, context)
    if earlier is not None:
        return _assessment_answer(assessment, earlier)
    await access.require_case_work(principal, PolicyAction.RECORD_ASSESSMENT, assessment.case_id)
    closed = len(await closures_on_the_bus(closures, assessment.case_id))
    erasure = await case_client_erasure(store, assessment.case_id)
    recorded = await execute(
        store,
        SOURCE,
        context,
        case_stream(assessment.case_id),
        lambda history: decide_assessment(
            history, assessment, closed, erasure.erased, occurred_at=context.moment()
        ),
        guard=erasure.read,
    )
    return _assessment_answer(assessment, recorded)


def _assessment_answer(
    assessment: InitialAssessmentRecorded, recorded: Sequence[RecordedEvent]
) -> tuple[Recorded, str]:
    """What ``record_initial_assessment`` answers: the assessment it recorded (the first
    attempt's, on a retry), or ``assessment`` if nothing was recorded."""
    first = recorded[0].event if recorded else assessment
    assert isinstance(first, InitialAssessmentRecorded)
    return recorded_of(assessment.case_id, recorded), first.assessment_id


async def closures_on_the_bus(
    closures: ClosureLog, case_id: str, asked_about: str = ""
) -> tuple[Closure, ...]:
    """The case's closures, among them every closure the bus held when asked: planning
    answers a closure once it is on the bus, so a command sent after that answer is decided
    on it. ``NotCaughtUp`` naming ``asked_about`` (what the request named; the case by
    default) when intake's log does not hold them in time: nothing is decided."""
    if not await closures.caught_up(case_id):
        raise NotCaughtUp("the case's closures", asked_about or case_id)
    return await closures.closures(case_id)


async def closure_moments(closures: ClosureLog, case_id: str) -> tuple[datetime, ...]:
    """When each closure of the case intake's log holds happened, in planning's order, not
    waiting for the bus: every reopening was decided on the closures the log then held
    (``closures_on_the_bus``), so it holds the one each reopening followed, which a command on
    a reopened case is checked against (``CaseRecord.require_after_reopened_closure``), whether
    it states its moment or not (``CommandContext.moment``)."""
    return tuple(closure.closed_at for closure in await closures.closures(case_id))


def reopening_of(command: ReopenCase) -> CaseReopened:
    return build(CaseReopened, fields_of(command))


async def reopen_case(
    store: EventStore,
    closures: ClosureLog,
    context: CommandContext,
    command: ReopenCase,
    published: Published,
) -> Recorded:
    """Decided on the closures the bus holds of the case (``ClosureLog.caught_up``: planning
    answers a closure once it is on the bus, so a reopening sent after that answer finds it),
    and answered once the bus has the reopening (``once_published``): a partner agency's
    accepted referrals run again, and the case's worker's planning commands wait for it."""
    require_role(context.actor.role, Action.REOPEN_CASE)
    reopened = reopening_of(command)
    closed = await closures_on_the_bus(closures, reopened.case_id)
    erasure = await case_client_erasure(store, reopened.case_id)
    recorded = await execute(
        store,
        SOURCE,
        context,
        case_stream(reopened.case_id),
        lambda history: decide_reopening(
            history,
            reopened,
            len(closed),
            erasure.erased,
            closed_at=closed[-1].closed_at if closed else None,
            occurred_at=context.moment(),
        ),
        guard=erasure.read,
    )
    await once_published(published, recorded, "case reopening")
    return recorded_of(reopened.case_id, recorded)


async def reopened_before(
    store: EventStore, context: CommandContext, published: Published
) -> Recorded | None:
    """A supervisor's ReopenCase's earlier answer (``recorded_before``), asked before
    ``AccessControl.require_supervision`` checks their team; once the bus has it, as the
    first answer was."""
    earlier = await recorded_before(store, SOURCE, context)
    if earlier is None:
        return None
    await once_published(published, earlier, "case reopening")
    return recorded_of("", earlier)


def consent_of(
    context: CommandContext, command: GrantConsent, client_id: str, now: datetime | None
) -> ConsentGranted:
    """The consent ``command`` asks for, checked; ``client_id`` is the case's client."""
    consent = build(
        ConsentGranted,
        {
            "consent_id": derived_id(context, SOURCE, "consent"),
            "client_id": client_id,
            **{k: v for k, v in fields_of(command).items() if v is not None},
        },
    )
    check_consent(consent, now)
    return consent


async def grant_consent(
    store: EventStore,
    closures: ClosureLog,
    access: AccessControl,
    principal: Principal,
    context: CommandContext,
    command: GrantConsent,
    now: datetime | None,
    published: Published,
) -> tuple[Recorded, str]:
    """Returns what was recorded and the consent's id (the first attempt's, on a retry), once
    the bus has the consent (``once_published``): a referral made after the answer, and the
    partner's reads, are decided on facts holding it. A case manager or social worker records
    one only on the case assigned to them (``_require_case_work``)."""
    require_role(context.actor.role, Action.RECORD_CONSENT)
    await _require_case_work(store, access, principal, context, command.case_id)
    case = case_from(await store.read_stream(case_stream(command.case_id)))
    client_id = case.opened.client_id if case is not None else "unknown-client"
    consent = consent_of(context, command, client_id, now)
    erasure = ClientErasure(store, None if case is None else client_id)
    closed = await closure_moments(closures, command.case_id)
    recorded = await execute(
        store,
        SOURCE,
        context,
        case_stream(command.case_id),
        lambda history: decide_consent(
            history, consent, erasure.erased, occurred_at=context.moment(), closures=closed
        ),
        guard=erasure.read,
    )
    await once_published(published, recorded, "consent")
    first = recorded[0].event if recorded else consent
    assert isinstance(first, ConsentGranted)
    return recorded_of(command.case_id, recorded), first.consent_id


async def _require_case_work(
    store: EventStore,
    access: AccessControl,
    principal: Principal,
    context: CommandContext,
    case_id: str,
) -> None:
    """A consent's grant or revocation by a case manager or social worker only on the case
    assigned to them (``AccessControl.require_case_work``: refused and recorded before
    anything tells whether the case exists), unless the command's key recorded it before
    (``recorded_before``): its retry gets its first answer, not the refusal a new one would,
    even after a transfer."""
    if await recorded_before(store, SOURCE, context) is None:
        await access.require_case_work(principal, PolicyAction.RECORD_CONSENT, case_id)


def revocation_of(command: RevokeConsent, client_id: str) -> ConsentRevoked:
    """The revocation ``command`` asks for, checked (its reason within the catalog's bound, not
    blank); ``client_id`` is the case's client."""
    return build(ConsentRevoked, {"client_id": client_id, **fields_of(command)})


async def revoke_consent(
    store: EventStore,
    closures: ClosureLog,
    access: AccessControl,
    principal: Principal,
    context: CommandContext,
    command: RevokeConsent,
    published: Published,
) -> Recorded:
    """Answered once the bus has the revocation (``once_published``): the partner agency's
    reads in every service wait for their facts to hold it, from the answer on. A case manager
    or social worker revokes one only on the case assigned to them (``_require_case_work``)."""
    require_role(context.actor.role, Action.RECORD_CONSENT)
    # Checked before anything is read: the decision builds the event again with the client.
    revocation_of(command, UNCHECKED_CLIENT)
    await _require_case_work(store, access, principal, context, command.case_id)
    closed = await closure_moments(closures, command.case_id)
    # Withdrawing a consent stays possible after the erasure (what is left of the case is
    # still decided on it); only the reason cannot be sealed.
    with unsealable_after_erasure("reason", command.reason is not None):
        recorded = await execute(
            store,
            SOURCE,
            context,
            case_stream(command.case_id),
            lambda history: decide_revocation(
                history,
                command.case_id,
                command.consent_id,
                command.reason,
                occurred_at=context.moment(),
                closures=closed,
            ),
        )
    await once_published(published, recorded, "consent revocation")
    return recorded_of(command.case_id, recorded)


@contextmanager
def unsealable_after_erasure(field: str, given: bool) -> Iterator[None]:
    """Around a command still allowed after the client's erasure, whose one sensitive value,
    ``field`` (``given``: the request has one), can no longer be sealed (the key is destroyed):
    the sealing's ``ClientErasedError`` becomes INVALID_ARGUMENT naming the field, not
    CLIENT_ERASED, which reads as "nothing can be recorded". Caught at sealing rather than
    looked up first, so the command reads no more than before."""
    try:
        yield
    except ClientErasedError:
        if not given:
            raise
        raise InvalidCommand(
            [
                FieldProblem(
                    field,
                    "the client was erased, so nothing about them can be recorded: send the"
                    " request without it",
                )
            ]
        ) from None


def hold_of(
    context: CommandContext, command: PlaceRetentionHold, today: date | None
) -> RetentionHoldPlaced:
    hold = build(
        RetentionHoldPlaced,
        {"hold_id": derived_id(context, SOURCE, "retention-hold"), **fields_of(command)},
    )
    check_hold_until(hold.until, today)
    return hold


async def place_retention_hold(
    store: EventStore, context: CommandContext, command: PlaceRetentionHold, today: date | None
) -> tuple[Recorded, str]:
    """Returns what was recorded and the hold's id (the first attempt's, on a retry)."""
    require_role(context.actor.role, Action.HOLD_RECORDS)
    hold = hold_of(context, command, today)
    recorded = await execute(
        store,
        SOURCE,
        context,
        client_stream(command.client_id),
        lambda history: decide_hold(history, hold, occurred_at=context.moment()),
    )
    first = recorded[0].event if recorded else hold
    assert isinstance(first, RetentionHoldPlaced)
    return recorded_of(command.client_id, recorded), first.hold_id


def release_of(command: ReleaseRetentionHold) -> RetentionHoldReleased:
    """The release ``command`` asks for, checked (its reason within the catalog's bound, not
    blank)."""
    return build(RetentionHoldReleased, fields_of(command))


async def release_retention_hold(
    store: EventStore, context: CommandContext, command: ReleaseRetentionHold
) -> Recorded:
    require_role(context.actor.role, Action.HOLD_RECORDS)
    release_of(command)
    recorded = await execute(
        store,
        SOURCE,
        context,
        client_stream(command.client_id),
        lambda history: decide_release(
            history,
            command.client_id,
            command.hold_id,
            command.reason,
            occurred_at=context.moment(),
        ),
    )
    return recorded_of(command.client_id, recorded)


@dataclass(frozen=True, slots=True)
class Erasure:
    recorded: Recorded
    case_ids: tuple[str, ...]
    keys_destroyed: int


def erasure_of(command: EraseClient, case_ids: Sequence[str] = ()) -> ClientErased:
    return build(ClientErased, {**fields_of(command), "case_ids": tuple(case_ids)})


async def erase_client(
    store: EventStore,
    locks: Locks,
    keyring: ClientKeyring,
    context: CommandContext,
    command: EraseClient,
    today: date,
) -> Erasure:
    """Record the erasure, then destroy the client's keys. Never partial: when the keys could
    not be destroyed, the command fails after recording, and any later erasure of the client
    (a retry, or a new request) records nothing more and destroys them."""
    require_role(context.actor.role, Action.ERASE_CLIENT)
    # Held from the look at the client's cases to the append: a case opened meanwhile is
    # either among them or, opened after, refused CLIENT_ERASED (its guard sees the erasure).
    async with locks.holding([client_cases_lock(command.client_id)]):
        case_ids = await opened_cases(store, keyring, command.client_id)
        erasure = erasure_of(command, case_ids)
        worked = await latest_case_work(store, case_ids)
        recorded = await execute(
            store,
            SOURCE,
            context,
            client_stream(command.client_id),
            lambda history: decide_erasure(
                history, erasure, today, occurred_at=context.moment(), cases_worked=worked
            ),
        )
    erased = next((r.event for r in recorded if isinstance(r.event, ClientErased)), None)
    if erased is None:
        history = await store.read_stream(client_stream(command.client_id))
        erased = client_record(history).erased
        recorded = [r for r in history if isinstance(r.event, ClientErased)]
    assert erased is not None
    destroyed = 0
    # The key table is a database (cases_of reads it): asked from a worker thread.
    owners = await asyncio.to_thread(keyring.owners_of_client, command.client_id, erased.case_ids)
    for owner in owners:
        destroyed += await asyncio.to_thread(keyring.destroy, owner)
    return Erasure(recorded_of(command.client_id, recorded), erased.case_ids, destroyed)


async def latest_case_work(
    store: EventStore, case_ids: Sequence[str]
) -> tuple[str, datetime] | None:
    """The latest moment stated by intake's events of ``case_ids`` (opening, assessments,
    consents, emergency accesses, closures followed, reopenings), in words; ``None``: none."""
    latest: tuple[str, datetime] | None = None
    for case_id in case_ids:
        for recorded in await store.read_stream(case_stream(case_id)):
            moment = recorded.metadata.occurred_at
            if latest is None or moment > latest[1]:
                latest = (f"the latest event of case {case_id}", moment)
    return latest


async def opened_cases(store: EventStore, keyring: ClientKeyring, client_id: str) -> list[str]:
    """The client's cases, as the erasure holding their lock names them: those the key table
    binds to them and whose opening is stored. A case is bound when its opening is sealed,
    before its append, which may then be refused (the erasure holds the lock): that case is
    never opened and is not named. Its key is still destroyed (``owners_of_client``)."""
    # The key table is a database: asked from a worker thread.
    bound = await asyncio.to_thread(keyring.table.cases_of, client_id)
    return [case for case in bound if await store.stream_version(case_stream(case)) > 0]


@dataclass
class ClientErasure:
    """A client's erasure as a command on one of their cases decides on it. ``read`` is the
    command's guard (``execute(..., guard=erasure.read)``): it reads the client's stream before
    each decision, keeps the erasure found in ``erased`` for the decision, and returns the
    version read, so the case's append is written only if the client's stream is still there
    (an erasure committed in between: the command reads again and is refused)."""

    store: EventStore
    client_id: str | None
    """None for an unknown case: nothing is read, and its decision refuses it NOT_FOUND."""
    erased: ClientErased | None = None
    """The client's erasure, if they were erased, as of the last ``read``."""
    lock: str | None = None
    """Held shared by the append (``StreamVersion.lock``): opening a case, its client's."""

    async def read(self) -> StreamVersion | None:
        if self.client_id is None:
            return None
        stream = client_stream(self.client_id)
        history = await self.store.read_stream(stream)
        self.erased = client_record(history).erased
        read = StreamVersion.as_read(stream, history)
        return read if self.lock is None else StreamVersion(read.stream, read.version, self.lock)


async def case_client_erasure(store: EventStore, case_id: str) -> ClientErasure:
    """The erasure of the case's client, to be read by the command's guard (``ClientErasure``);
    reads the case's stream for its client."""
    case = case_from(await store.read_stream(case_stream(case_id)))
    return ClientErasure(store, None if case is None else case.opened.client_id)


def recorded_of(subject_id: str, recorded: Sequence[RecordedEvent]) -> Recorded:
    """A retry's answer comes from the events of the first attempt, whatever it sent again."""
    return Recorded(
        subject_id=recorded[0].subject if recorded else subject_id,
        version=recorded[-1].sequence if recorded else 0,
        event_ids=tuple(str(event.event_id) for event in recorded),
    )
