"""Audit answers as protobuf messages."""

from __future__ import annotations

import json
from collections.abc import Container, Iterable, Iterator, Mapping
from datetime import datetime
from uuid import UUID

from google.protobuf.timestamp_pb2 import Timestamp

from casetrail.audit.v1 import audit_pb2
from casetrail.common.v1 import common_pb2
from casetrail_platform.grpc_platform.answer_caps import Cap, cut
from casetrail_platform.ledger.export import REDACTED_ATTRIBUTE as _REDACTED
from casetrail_platform.ledger.export import canonical_of_record
from casetrail_platform.ledger.note import current_key
from events.catalog.access import RecordAccessDenied, RecordAccessed
from events.cloudevents import iter_json_lines, to_structured
from events.envelope import Actor, RecordedEvent
from services.audit.app.ledger import EventProof, LogStatus
from services.audit.app.queries import Activity
from services.audit.domain import case_state
from services.audit.domain.history import TimeBasis
from services.audit.domain.summaries import summary

EXPORT_CHUNK_BYTES = 256 * 1024
EXPORT_CHUNK_EVENTS = 500

_STATUSES = {
    case_state.CaseStatus.UNKNOWN: audit_pb2.CASE_STATUS_UNSPECIFIED,
    case_state.CaseStatus.OPENED: audit_pb2.CASE_STATUS_OPENED,
    case_state.CaseStatus.ASSIGNED: audit_pb2.CASE_STATUS_ASSIGNED,
    case_state.CaseStatus.PLANNED: audit_pb2.CASE_STATUS_PLANNED,
    case_state.CaseStatus.CLOSED: audit_pb2.CASE_STATUS_CLOSED,
    case_state.CaseStatus.REOPENED: audit_pb2.CASE_STATUS_REOPENED,
}
BASES = {
    TimeBasis.OCCURRED: audit_pb2.TIME_BASIS_OCCURRED,
    TimeBasis.RECORDED: audit_pb2.TIME_BASIS_RECORDED,
}


def timestamp(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    message = Timestamp()
    message.FromDatetime(moment)
    return message


def actor(value: Actor) -> common_pb2.Actor:
    return common_pb2.Actor(user_id=value.user_id, role=value.role.value)


def timeline_entry(
    recorded: RecordedEvent, *, with_leaf: bool = False, redacted: bool = False
) -> audit_pb2.TimelineEntry:
    """``redacted``: ``recorded`` is shown with a part withheld (``queries.NamedOthers``), so it
    carries no ledger leaf: the stored event's would hold what is withheld, and the bytes shown
    are not the ones the leaf hashes."""
    metadata = recorded.metadata
    return audit_pb2.TimelineEntry(
        event_id=str(recorded.event_id),
        event_type=recorded.event_type,
        schema_version=recorded.schema_version,
        source=metadata.source,
        stream=recorded.stream,
        sequence=recorded.sequence,
        occurred_at=timestamp(metadata.occurred_at),
        recorded_at=timestamp(recorded.recorded_at),
        actor=actor(metadata.actor),
        correlation_id=str(metadata.correlation_id),
        causation_id=str(metadata.causation_id or ""),
        summary=summary(recorded.event),
        cloudevent_json=json.dumps(to_structured(recorded), ensure_ascii=False, sort_keys=True),
        ledger_leaf=canonical_of_record(recorded) if with_leaf and not redacted else b"",
        shown_in_part=redacted,
    )


TIMELINE_PAGE_BYTES = 3 * 1024 * 1024
"""What a timeline page's entries may take: a quarter under gRPC's 4 MiB message limit, for
the answer's other fields and room to spare. Entries carry their whole CloudEvent, and one
event may take up to 256 KiB stored (more once opened), so a count alone bounds nothing."""

_ENTRY_FRAMING_BYTES = 8
"""An entry's tag and length in the answer (at most 1 + 5 bytes), rounded up."""


class TimelineEntries:
    """The timeline entries of one answer, each built once: measured to fill the page, then
    handed out for the answer."""

    def __init__(self, *, with_leaves: bool) -> None:
        self._with_leaves = with_leaves
        self._built: dict[UUID, tuple[RecordedEvent, audit_pb2.TimelineEntry]] = {}

    def entry(
        self, recorded: RecordedEvent, redacted: Container[UUID] = frozenset()
    ) -> audit_pb2.TimelineEntry:
        """The entry of ``recorded``, built once per record: an entry measured before a part
        of it was withheld (``redacted``, a new record of the same id) is built again."""
        built = self._built.get(recorded.event_id)
        if built is None or built[0] is not recorded:
            entry = timeline_entry(
                recorded,
                with_leaf=self._with_leaves,
                redacted=recorded.event_id in redacted,
            )
            built = self._built[recorded.event_id] = (recorded, entry)
        return built[1]

    def answered_bytes(self, recorded: RecordedEvent) -> int:
        """What ``recorded``'s entry takes in the answer."""
        return self.entry(recorded).ByteSize() + _ENTRY_FRAMING_BYTES


def activity(item: Activity) -> audit_pb2.Activity:
    recorded = item.recorded
    return audit_pb2.Activity(
        occurred_at=timestamp(recorded.metadata.occurred_at),
        recorded_at=timestamp(recorded.recorded_at),
        actor=actor(recorded.metadata.actor),
        event_type=recorded.event_type,
        summary=item.summary,
        source=recorded.metadata.source,
        event_id=str(recorded.event_id),
    )


def access_record(recorded: RecordedEvent) -> audit_pb2.AccessRecord:
    event = recorded.event
    assert isinstance(event, RecordAccessed)
    return audit_pb2.AccessRecord(
        event_id=str(recorded.event_id),
        accessor=common_pb2.Actor(user_id=event.accessor_id, role=event.accessor_role.value),
        accessor_agency_id=event.accessor_agency_id or "",
        purpose=event.purpose.value,
        sections=[section.value for section in event.sections],
        fields=list(event.fields),
        consent_id=next(iter(event.consent_ids), ""),
        consent_ids=event.consent_ids,
        occurred_at=timestamp(recorded.metadata.occurred_at),
        recorded_at=timestamp(recorded.recorded_at),
        source=recorded.metadata.source,
        rule=event.rule,
        policy_version=event.policy_version,
        redacted_fields=list(event.redacted_fields),
        emergency_access_id=event.emergency_access_id or "",
        client_application=event.client_application or "",
    )


def access_refusal(recorded: RecordedEvent) -> audit_pb2.AccessRefusal:
    event = recorded.event
    assert isinstance(event, RecordAccessDenied)
    return audit_pb2.AccessRefusal(
        event_id=str(recorded.event_id),
        accessor=common_pb2.Actor(user_id=event.accessor_id, role=event.accessor_role.value),
        accessor_agency_id=event.accessor_agency_id or "",
        purpose=event.purpose.value,
        action=event.action,
        rule=event.rule,
        policy_version=event.policy_version,
        occurred_at=timestamp(recorded.metadata.occurred_at),
        recorded_at=timestamp(recorded.recorded_at),
        source=recorded.metadata.source,
        client_application=event.client_application or "",
    )


REDACTED_ATTRIBUTE = _REDACTED
"""The extension attribute of an export's line shown with a part withheld
(``queries.NamedOthers``): the fields withheld, comma-separated. Such a line is no longer the
stored event, so no proof can lead from it to its log's root: it carries none (nor a pending
mark), and audit's signed statement of the export's extent names it withheld with its digest
(``export_note``), which ``casetrail verify`` checks it by."""


def export_chunks(
    ordered: Iterable[RecordedEvent],
    proofs: Mapping[UUID, Mapping[str, str]] | None = None,
    redacted: Mapping[UUID, str] | None = None,
) -> Iterator[audit_pb2.ExportCaseResponse]:
    """Whole JSON lines, cut into chunks small enough for any gRPC message limit. ``proofs``:
    the ledger's extension attributes of each event (``casetrail_platform.ledger.export``);
    ``redacted``: the fields withheld from events shown in part (``REDACTED_ATTRIBUTE``)."""
    lines: list[bytes] = []
    size = 0
    marks = {
        event_id: {REDACTED_ATTRIBUTE: withheld} for event_id, withheld in (redacted or {}).items()
    }
    attributes = {**(proofs or {}), **marks}
    for line in _lines(ordered, attributes):
        encoded = line.encode("utf-8")
        lines.append(encoded)
        size += len(encoded)
        if size >= EXPORT_CHUNK_BYTES or len(lines) >= EXPORT_CHUNK_EVENTS:
            yield audit_pb2.ExportCaseResponse(json_lines=b"".join(lines), event_count=len(lines))
            lines, size = [], 0
    if lines:
        yield audit_pb2.ExportCaseResponse(json_lines=b"".join(lines), event_count=len(lines))


def _lines(
    ordered: Iterable[RecordedEvent], proofs: Mapping[UUID, Mapping[str, str]]
) -> Iterator[str]:
    if not proofs:
        yield from iter_json_lines(ordered)
        return
    for recorded in ordered:
        document = to_structured(recorded)
        document.update(proofs.get(recorded.event_id, {}))
        text = json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        yield text + "\n"


def _checkpoint(origin: str, size: int, root: bytes, note: str) -> audit_pb2.LedgerCheckpoint:
    return audit_pb2.LedgerCheckpoint(
        origin=origin, tree_size=size, root_hash=root, signed_note=note
    )


def ledger_status(status: LogStatus) -> audit_pb2.GetLedgerCheckpointResponse:
    response = audit_pb2.GetLedgerCheckpointResponse(
        # The key signing now, as Go reads it (the whole schedule: ListLedgerKeys).
        verifier_key="" if status.verifier is None else str(current_key(status.verifier))
    )
    if status.latest is not None:
        latest = status.latest
        response.latest.CopyFrom(
            _checkpoint(latest.origin, latest.size, latest.root, status.latest_note)
        )
    if status.witnessed is not None:
        held = status.witnessed
        response.witnessed.CopyFrom(_checkpoint(held.origin, held.size, held.root, held.note))
    if status.alarm is not None:
        alarm = status.alarm
        response.alarm.CopyFrom(
            audit_pb2.LedgerAlarm(
                held_size=alarm.held_size,
                checkpoint_size=alarm.checkpoint_size,
                first_bad_position=alarm.first_bad_position or 0,
                problem=alarm.problem,
            )
        )
    return response


def event_proof(proof: EventProof) -> audit_pb2.ProveEventInclusionResponse:
    checkpoint = proof.checkpoint
    return audit_pb2.ProveEventInclusionResponse(
        service=proof.service,
        position=proof.proof.position,
        leaf_hash=proof.proof.leaf_hash,
        proof=proof.proof.hashes,
        checkpoint=_checkpoint(checkpoint.origin, checkpoint.size, checkpoint.root, proof.note),
    )


def state(
    value: case_state.CaseState, as_of: datetime, *, sensitive: bool = True
) -> audit_pb2.CaseState:
    """``value`` as of ``as_of``; ``sensitive``: whether its reader is shown sensitive values,
    without which the version agreed is numbered as planning showed it to them
    (``Plan.agreed_version_shown``) and an agreement naming none but goals withheld from them is
    not shown (``Plan.agreement_shown``, ``CaseState.status_shown``)."""
    message = audit_pb2.CaseState(
        case_id=value.case_id,
        status=_STATUSES[value.status_shown(sensitive)],
        client_id=value.client_id or "",
        presenting_needs=[_need(need) for need in value.presenting_needs],
        assessed_needs=[_need(need) for need in value.assessed_needs],
        services=[_service(service) for service in value.services],
        referrals=[
            audit_pb2.Referral(
                referral_id=r.referral_id,
                provider_id=r.provider_id,
                need_category=r.need_category,
                status=r.status,
            )
            for r in value.referrals
        ],
        consents=[_consent(consent, as_of) for consent in value.consents],
        closure_reason=value.closure_reason or "",
        events_applied=value.events_applied,
        last_event_at=timestamp(value.last_event_at),
        client_date_of_birth=(
            "" if value.client.date_of_birth is None else value.client.date_of_birth.isoformat()
        ),
        client_retention_hold_ids=value.client.retention_hold_ids,
        client_erased=value.client.erased,
    )
    if value.assignment is not None:
        message.assignment.CopyFrom(
            audit_pb2.Assignment(
                worker_id=value.assignment.worker_id,
                worker_role=value.assignment.worker_role,
                since=timestamp(value.assignment.since),
            )
        )
    if value.plan is not None:
        message.plan.CopyFrom(_plan(value.plan, sensitive))
    return message


STATE_SERVICES = Cap(1000, 1536 * 1024)
STATE_REFERRALS = Cap(100, 256 * 1024)
STATE_CONSENTS = Cap(100, 256 * 1024)
STATE_RETENTION_HOLDS = 1000
"""What a case state lists at most of each list that grows with the case: a case served daily
for years took the answer past gRPC's 4 MiB, which never reaches the caller (the read recorded
all the same), so its state as of any later moment could never be read again. Its entries'
texts are identifiers and codes (64 ASCII characters at most): a service takes about 330
bytes, a referral 170, a consent 370 (every section), a hold 66."""

_PENDING_SERVICES = ("scheduled", "rescheduled")
_RUNNING_REFERRALS = ("made", "accepted")


def cut_state(message: audit_pb2.CaseState) -> None:
    """Keep in ``message`` (what the caller may see of a case state) the entries of each
    growing list that matter most, within its cap, in their order, with ``*_truncated`` and
    ``*_total``: the services still to come, the soonest first, then the others, the latest
    first; the referrals still running, then the others, the latest first; the consents
    active at the moment, then the others, the latest first; the latest retention holds."""
    message.services_truncated, message.services_total = cut(
        message.services, STATE_SERVICES, lambda _, service: _service_rank(service)
    )
    message.referrals_truncated, message.referrals_total = cut(
        message.referrals,
        STATE_REFERRALS,
        lambda index, referral: (referral.status not in _RUNNING_REFERRALS, -index),
    )
    message.consents_truncated, message.consents_total = cut(
        message.consents, STATE_CONSENTS, lambda index, consent: (not consent.active, -index)
    )
    holds = message.client_retention_hold_ids
    message.client_retention_holds_total = len(holds)
    message.client_retention_holds_truncated = len(holds) > STATE_RETENTION_HOLDS
    if message.client_retention_holds_truncated:
        del holds[: len(holds) - STATE_RETENTION_HOLDS]


def _service_rank(service: audit_pb2.ScheduledService) -> tuple[int, int, int]:
    starts = (service.starts_at.seconds, service.starts_at.nanos)
    if service.status in _PENDING_SERVICES:
        return (0, *starts)
    return (1, -starts[0], -starts[1])


def _need(need: case_state.Need) -> audit_pb2.Need:
    return audit_pb2.Need(category=need.category, urgency=need.urgency or "")


def _plan(plan: case_state.Plan, sensitive: bool) -> audit_pb2.Plan:
    agreement = plan.agreement_shown(sensitive)
    return audit_pb2.Plan(
        plan_id=plan.plan_id,
        agreed_version=plan.agreed_version_shown(sensitive),
        agreed_goal_ids=[] if agreement is None else list(agreement.goal_ids),
        signed_by_client=agreement is not None and agreement.signed_by_client,
        goals=[
            audit_pb2.PlanGoal(
                goal_id=g.goal_id, term=g.term, need_category=g.need_category, status=g.status
            )
            for g in plan.goals
        ],
    )


def _service(service: case_state.ScheduledService) -> audit_pb2.ScheduledService:
    return audit_pb2.ScheduledService(
        service_id=service.service_id,
        kind=service.kind,
        provider_id=service.provider_id,
        starts_at=timestamp(service.starts_at),
        ends_at=timestamp(service.ends_at),
        status=service.status,
        referral_id=service.referral_id,
    )


def _consent(consent: case_state.Consent, as_of: datetime) -> audit_pb2.Consent:
    return audit_pb2.Consent(
        consent_id=consent.consent_id,
        recipient_agency_id=consent.recipient_agency_id,
        scope=list(consent.scope),
        expires_at=timestamp(consent.expires_at),
        status=consent.status,
        active=consent.active_at(as_of),
    )
