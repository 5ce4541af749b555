"""Correcting a client's record: their date of birth (rectification, GDPR Art. 16).

Who may correct is the policy's (``AccessControl.require_client_correction``: a coordinator,
the worker assigned to one of the client's cases, that worker's supervisor); what may be
corrected is the client stream's (``domain.corrections``).
"""

from __future__ import annotations

from datetime import date

from casetrail_platform.commands import CommandContext, NotFound
from casetrail_platform.decide import execute, recorded_before
from casetrail_platform.identity.principal import Principal
from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.store.port import EventStore
from events.catalog.clients import ClientDateOfBirthCorrected
from services.intake.adapters.case_closures import ClosureLog
from services.intake.adapters.client_directory import ClientDirectory
from services.intake.app.commands import CorrectClientDateOfBirth
from services.intake.app.handlers import SOURCE, Recorded, closures_on_the_bus, recorded_of
from services.intake.app.validation import build, fields_of
from services.intake.domain.cases import case_from, case_stream
from services.intake.domain.clients import client_from, client_stream, probe_of
from services.intake.domain.corrections import check_corrected_date_of_birth, decide_correction
from services.intake.domain.permissions import Action, require_role


def correction_of(command: CorrectClientDateOfBirth, today: date) -> ClientDateOfBirthCorrected:
    """The correction ``command`` asks for, checked against ``today`` (the agency's date)."""
    correction = build(
        ClientDateOfBirthCorrected,
        {name: value for name, value in fields_of(command).items() if value is not None},
    )
    check_corrected_date_of_birth(correction.date_of_birth, today)
    return correction


async def correct_date_of_birth(
    store: EventStore,
    directory: ClientDirectory,
    closures: ClosureLog,
    access: AccessControl,
    principal: Principal,
    context: CommandContext,
    command: CorrectClientDateOfBirth,
    today: date,
) -> Recorded:
    """Decided under the lock a registration of the corrected person takes: a registration
    racing the correction sees it, or the correction sees the registration (the directory is
    caught up by the next registration that could match, under the same lock). A retry of
    one recorded gets its first answer without waiting for the cases' closures or checking the
    caller's part in them (``recorded_before``): a closure since, a transfer since, or a log
    trailing, changes nothing it did."""
    require_role(context.actor.role, Action.CORRECT_CLIENT)
    correction = correction_of(command, today)
    # Before the caller's right is checked: a worker's rests on an assignment a transfer ends,
    # and the retry of a correction they recorded gets its first answer, not that refusal.
    earlier = await recorded_before(store, SOURCE, context)
    if earlier is not None:
        return recorded_of(correction.client_id, earlier)
    case_ids = await access.require_client_correction(principal, correction.client_id)
    client = client_from(await store.read_stream(client_stream(correction.client_id)))
    if client is None:
        raise NotFound("client", correction.client_id)
    cases_closed = bool(case_ids) and all(
        [await _is_closed(store, closures, case_id, correction.client_id) for case_id in case_ids]
    )
    corrected = client.registration.updated(date_of_birth=correction.date_of_birth)
    async with directory.registering(probe_of(corrected)):
        recorded = await execute(
            store,
            SOURCE,
            context,
            client_stream(correction.client_id),
            lambda history: decide_correction(
                history, correction, cases_closed, occurred_at=context.moment()
            ),
        )
    return recorded_of(correction.client_id, recorded)


async def _is_closed(store: EventStore, closures: ClosureLog, case_id: str, client_id: str) -> bool:
    """Decided on the closures the bus holds (a correction sent after planning answered the
    last closure is refused); not caught up: ``NotCaughtUp`` naming the client the request
    named, not their case."""
    case = case_from(await store.read_stream(case_stream(case_id)))
    return case is not None and case.is_closed(
        len(await closures_on_the_bus(closures, case_id, client_id))
    )
