"""Checking a case export offline (``casetrail verify FILE``): every line's proof and checkpoint
(``export``), and what only the export as a whole shows.

The leaf is recomputed from the line itself (``canonical_of_record``: the canonical bytes of
``casetrail_platform.ledger.canonical`` from the event's attributes and data, or, for an event
stored under an older schema version, from ``storedversion``/``storeddata``, which the decoder
has checked upcast to ``data``), so any change to a line, to its proof or to the checkpoint
fails verification, and a checkpoint is trusted only under a public key the verifier got
elsewhere (``casetrail ledger-keys``, the README, the data dir). A line shown with a part
withheld from its reader (``casetrailredacted``) carries no proof: it is accepted as withheld
only where audit's verified statement of the extent names it with its digest.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

from casetrail_platform.bus.ordering import travels_under_one_key
from casetrail_platform.ledger import export_note
from casetrail_platform.ledger.export import (
    CHECKPOINT_ATTRIBUTE,
    PENDING_ATTRIBUTE,
    PROOF_ATTRIBUTE,
    REDACTED_ATTRIBUTE,
    canonical_of_record,
)
from casetrail_platform.ledger.export_file import Unreadable
from casetrail_platform.ledger.export_note import (
    EXPORT_NOTE_ATTRIBUTE,
    ExportStatement,
    sequences_digest,
    service_of_source,
    withheld_digest,
)
from casetrail_platform.ledger.merkle import ProofError, leaf_hash, verify_inclusion
from casetrail_platform.ledger.note import (
    LogKeys,
    NoteError,
    Verifier,
    current_key,
    open_checkpoint,
    open_note,
    schedule_of,
)
from casetrail_platform.ledger.pending import (
    PENDING_NOTE_ATTRIBUTE,
    PendingEntry,
    PendingStatement,
    audit_origin,
)
from casetrail_platform.limits import OCCURRED_AT_CLOCK_SKEW
from events.catalog.cases import CaseOpened
from events.envelope import RecordedEvent, to_micros
from events.errors import InvalidEventError
from events.registry import EventRegistry
from events.strict_json import strict_json

MAX_PROBLEMS = 1000
"""The problems ``verify_lines`` keeps to tell; it counts the rest."""


@dataclass
class ExportVerification:
    lines: int = 0
    verified: int = 0
    pending: int = 0
    """Lines marked as recorded after their log's newest checkpoint: not yet provable."""
    withheld: int = 0
    """Lines shown with a part withheld from the export's reader (``casetrailredacted``),
    named with their digest by audit's verified statement of the extent: vouched for by
    audit, not verified by the ledger (no proof leads from them to a root)."""
    problems: list[str] = field(default_factory=list)
    """The first ``MAX_PROBLEMS`` problems, in the order found."""
    more_problems: int = 0
    """Problems found past those: counted, not kept (a file of short bad lines would
    otherwise fill memory with one message per line)."""
    checkpoints: dict[str, int] = field(default_factory=dict)
    """The largest tree size seen per log."""
    sign_every: float = 0.0
    """The longest interval between checkpoints the pending lines name."""
    alarms: dict[str, str] = field(default_factory=dict)
    """Logs under an inconsistency alarm (origin: the witness's finding) whose pending lines
    will not become provable with the next checkpoint."""
    pending_under_alarm: dict[str, int] = field(default_factory=dict)
    """Pending lines per log under alarm (counted in ``pending`` too)."""
    statements: list[tuple[str, str]] = field(default_factory=list)
    """(case, time) of each statement of pending events audit signed, verified."""
    extent: tuple[str, str] | None = None
    """(case, time) of audit's statement of the export's extent, once verified."""
    counted_only: list[str] = field(default_factory=list)
    """The streams of several cases a verified statement of the older form (signed before
    audit named their lines, ``export_note``) states by their count alone: a line of one
    swapped for another event of the stream would not show."""

    def add_problems(self, *problems: str) -> None:
        room = max(MAX_PROBLEMS - len(self.problems), 0)
        self.problems.extend(problems[:room])
        self.more_problems += len(problems[room:])

    @property
    def ok(self) -> bool:
        """Nothing failed, and every line is verified or withheld as audit's statement says."""
        return not self.problems and self.lines > 0 and self.verified + self.withheld == self.lines

    @property
    def only_pending(self) -> bool:
        """Nothing failed, but some lines are not yet provable (neither verified nor refused)."""
        return (
            not self.problems
            and self.pending > 0
            and self.verified + self.withheld + self.pending == self.lines
        )


def verify_export(
    text: str, registry: EventRegistry, verifiers: Mapping[str, LogKeys]
) -> ExportVerification:
    """Checks every line of an export: it decodes, carries a proof, its checkpoint is signed by
    the key of its log, and the proof leads from the event's own leaf to that root."""
    from events.cloudevents import json_lines

    return verify_lines(json_lines(text), registry, verifiers)


def verify_lines(
    lines: Iterable[tuple[int, str | Unreadable]],
    registry: EventRegistry,
    verifiers: Mapping[str, LogKeys],
) -> ExportVerification:
    """``verify_export`` of the numbered lines of an export (``export_lines`` of a file)."""
    from events.cloudevents import from_structured

    result = ExportVerification()
    whole = _WholeExport()
    for number, line in lines:
        if isinstance(line, Unreadable):
            result.lines += 1
            result.add_problems(f"line {number}: {line.problem}")
            continue
        if not line.strip():
            continue
        result.lines += 1
        problem = _verify_line(line, registry, verifiers, result, from_structured, whole, number)
        if problem is _PENDING:
            result.pending += 1
        elif problem is _WITHHELD:
            result.withheld += 1
        elif problem is None:
            result.verified += 1
        else:
            result.add_problems(f"line {number}: {problem}")
    if result.lines == 0:
        result.add_problems("the export holds no events")
    result.add_problems(*whole.gaps())
    result.add_problems(*whole.out_of_order())
    result.add_problems(*whole.other_cases())
    result.add_problems(*whole.other_clients())
    wrong = whole.wrong_pending(result.checkpoints)
    unsigned, statement_problems = whole.unsigned_pending(verifiers, result)
    result.add_problems(*wrong, *unsigned, *statement_problems)
    result.pending -= len(wrong) + len(unsigned)
    result.add_problems(*whole.cut(verifiers, result))
    unvouched, unheld = whole.unvouched_withheld()
    result.add_problems(*unvouched, *unheld)
    result.withheld -= len(unvouched)
    for pending in whole.pending:
        if pending.alarm is not None and pending.number not in whole.refused:
            result.alarms.setdefault(pending.origin, pending.alarm)
            count = result.pending_under_alarm.get(pending.origin, 0) + 1
            result.pending_under_alarm[pending.origin] = count
    return result


_PENDING = "pending"
"""``_verify_line``'s answer for a line marked pending (checked again on the whole export)."""
_WITHHELD = "withheld"
"""``_verify_line``'s answer for a line marked redacted (checked against audit's statement)."""


@dataclass(frozen=True)
class _Withheld:
    number: int
    label: str
    place: tuple[str, str, int]
    """(service, stream, sequence)."""
    digest: str


@dataclass(frozen=True)
class _Pending:
    number: int
    label: str
    origin: str
    tree_size: int
    position: int
    stream: tuple[str, str]
    sequence: int
    event_id: str
    alarm: str | None


@dataclass
class _WholeExport:
    """What only the export as a whole shows: each line proves its own event, so a line
    removed or repeated would leave every other line verified. A case's export holds each of
    its one-key streams (``travels_under_one_key``: the case's, its access records', its
    client's) whole, from sequence 1 up, so a missing line leaves a hole in one. (A cut at the
    very end of a stream leaves none: audit's statement of the extent tells, ``cut``.) A list's
    reads of several cases share one ``access-batch-…`` stream, of which the export of one case
    holds only its own entries: no one-key stream, not checked for holes (``cut`` checks which
    they are against the statement's digest of their sequences)."""

    lines_by_id: dict[str, int] = field(default_factory=dict)
    sequences: dict[tuple[str, str], dict[int, int]] = field(default_factory=dict)
    shared_sequences: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    """The sequences of the lines of each stream of several cases (no one-key stream)."""
    recorded_at: list[tuple[datetime, int, str]] = field(default_factory=list)
    """(recorded at, line, event id) of every line: none may be recorded after the export."""
    proven_sequences: dict[tuple[str, str], int] = field(default_factory=dict)
    """The highest sequence of each stream a line proves."""
    pending: list[_Pending] = field(default_factory=list)
    statements: list[tuple[int, str]] = field(default_factory=list)
    """(line, text) of every ``ledgerpendingnote``."""
    refused: set[int] = field(default_factory=set)
    """Lines of pending marks already failed."""
    extents: list[tuple[int, str]] = field(default_factory=list)
    """(line, text) of every ``ledgerexportnote``."""
    stream_lines: dict[tuple[str, str], int] = field(default_factory=dict)
    """The lines of each stream (source, stream)."""
    placed: dict[tuple[str, str], list[_Placed]] = field(default_factory=dict)
    """The lines of each stream (source, stream) in the export's order."""
    audits: set[str] = field(default_factory=set)
    """Audit's log of each agency whose logs the lines' proofs and marks name, where a key
    of it is given: the keys the statement of the extent may be signed with."""
    withheld: list[_Withheld] = field(default_factory=list)
    """Every line marked ``casetrailredacted`` without a proof or pending mark."""
    statement: ExportStatement | None = None
    """Audit's statement of the extent, once verified as of the export's case."""

    clients: dict[str, tuple[int, str]] = field(default_factory=dict)
    """The subjects of client streams, each with its first line and event id: a case's export
    holds its client's events."""
    opened_for: tuple[int, str] | None = None
    """The line of the case's opening and the client it names: the export's client."""
    subjects: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Every other subject (a case) with its first line and event id."""

    def subject(self, recorded: RecordedEvent, number: int) -> None:
        if recorded.stream.startswith("client-"):
            self.clients.setdefault(recorded.subject, (number, str(recorded.event_id)))
        else:
            self.subjects.setdefault(recorded.subject, (number, str(recorded.event_id)))
            if isinstance(recorded.event, CaseOpened) and self.opened_for is None:
                self.opened_for = (number, recorded.event.client_id)

    def other_clients(self) -> list[str]:
        """A case's export holds the events of the one client the case was opened for: those
        of another client (from that client's export, whole from sequence 1) each verify, and
        the case would pass as that person's too (their registration, their corrections)."""
        seen = sorted((line, event_id, client) for client, (line, event_id) in self.clients.items())
        if self.opened_for is not None:
            line, client = self.opened_for
            whose = f"the case was opened for client {client} (line {line})"
        elif seen:
            line, _, client = seen[0]
            whose = f"the export is of client {client} (line {line})"
        else:
            return []
        return [
            f"line {line}: event {event_id} is of client {other}, but {whose}: an export holds"
            " one case and its client"
            for line, event_id, other in seen
            if other != client
        ]

    def other_cases(self) -> list[str]:
        """An export is of one case: lines of another (two exports put together, say) would
        each verify, and the export would pass as the history of a case it is not."""
        cases = sorted(
            (line, event_id, subject)
            for subject, (line, event_id) in self.subjects.items()
            if subject not in self.clients
        )
        first = cases[0][2] if cases else ""
        return [
            f"line {line}: event {event_id} is of case {subject}, but the export is of case"
            f" {first} (line {cases[0][0]}): an export holds one case"
            for line, event_id, subject in cases[1:]
        ]

    def proven(self, recorded: RecordedEvent) -> None:
        key = (recorded.metadata.source, recorded.stream)
        self.proven_sequences[key] = max(self.proven_sequences.get(key, 0), recorded.sequence)

    def wrong_pending(self, checkpoints: Mapping[str, int]) -> list[str]:
        """A proof stripped from a line and a pending mark put in its place must not pass: an
        event is pending only past the checkpoint the export's proofs of its log use, which
        it must name, and after every proven event of its stream (a log's events are proved
        in order: a later event proven means an earlier one was provable)."""
        problems = []
        for pending in self.pending:
            proven_size = checkpoints.get(pending.origin)
            problem = None
            if proven_size is not None and pending.tree_size != proven_size:
                problem = (
                    f"marked {PENDING_ATTRIBUTE} past {pending.tree_size} events, but the"
                    f" export proves events of {pending.origin} in its tree of {proven_size}"
                )
            elif pending.position <= pending.tree_size:
                problem = (
                    f"marked {PENDING_ATTRIBUTE}, but its position {pending.position} is in"
                    f" the checkpoint of {pending.tree_size} events: its proof is missing"
                )
            elif pending.sequence < self.proven_sequences.get(pending.stream, 0):
                problem = (
                    f"marked {PENDING_ATTRIBUTE}, but a later event of stream"
                    f" {pending.stream[1]} is proven: its proof is missing"
                )
            if problem is not None:
                self.refused.add(pending.number)
                problems.append(f"line {pending.number}: {pending.label} {problem}")
        return problems

    def unsigned_pending(
        self, verifiers: Mapping[str, LogKeys], result: ExportVerification
    ) -> tuple[list[str], list[str]]:
        """Pending marks no statement signed by audit vouches for (one problem per line), and
        the statements' own problems: one that does not verify, names another case than the
        others, or names an event the export does not hold as pending (a line removed, or a
        proof spliced in)."""
        signed: dict[PendingEntry, tuple[int, PendingStatement]] = {}
        problems: list[str] = []
        cases: dict[str, int] = {}
        for number, text in self.statements:
            statement, failure = _opened_statement(text, verifiers)
            if statement is None:
                problems.append(f"line {number}: {PENDING_NOTE_ATTRIBUTE}: {failure}")
                continue
            cases.setdefault(statement.case_id, number)
            result.statements.append((statement.case_id, statement.at.isoformat()))
            for entry in statement.entries:
                signed[entry] = (number, statement)
        if len(cases) > 1:
            problems.append(
                f"the statements of pending events name several cases: {', '.join(sorted(cases))}"
            )
        unsigned = []
        marked = set()
        for pending in self.pending:
            entry = PendingEntry(
                pending.origin, pending.tree_size, pending.position, pending.event_id
            )
            marked.add(entry)
            if pending.number in self.refused:
                continue
            found = signed.get(entry)
            problem = None
            if found is None:
                problem = (
                    f"marked {PENDING_ATTRIBUTE}, but no statement signed by"
                    f" {audit_origin(pending.origin)} names it pending: its proof may have been"
                    " stripped"
                )
            elif (pending.alarm is not None) != (pending.origin in found[1].alarms):
                problem = (
                    f"marked {PENDING_ATTRIBUTE} {'under' if pending.alarm else 'without'} an"
                    f" inconsistency alarm on {pending.origin}, which audit's statement on line"
                    f" {found[0]} {'does not name' if pending.alarm else 'names'}"
                )
            if problem is not None:
                self.refused.add(pending.number)
                unsigned.append(f"line {pending.number}: {pending.label} {problem}")
        for entry, (number, _) in sorted(signed.items()):
            if entry not in marked:
                problems.append(
                    f"line {number}: audit's statement names event {entry.event_id} (position"
                    f" {entry.position} of {entry.origin}) pending, but the export holds no such"
                    " pending line"
                )
        return unsigned, problems

    def named(self, origin: str, verifiers: Mapping[str, LogKeys]) -> None:
        """A line's proof or mark names log ``origin``: its agency's audit may sign."""
        if (audit := audit_origin(origin)) in verifiers:
            self.audits.add(audit)

    def cut(self, verifiers: Mapping[str, LogKeys], result: ExportVerification) -> list[str]:
        """Audit's statement of the extent against what the export holds: exactly one,
        signed by audit's log in the agency of the logs the export's lines name, of the
        export's case; its line count, each one-key stream's last sequence and each other
        stream's lines (their count, and which they are where it names them) must be the
        export's, and no line recorded after it. Without it a cut at the end shows nowhere."""
        if not self.extents:
            return [
                f"the export carries no {EXPORT_NOTE_ATTRIBUTE}, audit's signed statement of its"
                " extent, so lines cut from its end would not show: export it again (audit"
                " signs one with every export while its own log's key answers)"
            ]
        (number, text), *more = self.extents
        problems = [
            f"line {again}: a second {EXPORT_NOTE_ATTRIBUTE} (the first is on line {number}):"
            " an export carries one"
            for again, _ in more
        ]
        for pending in self.pending:
            self.named(pending.origin, verifiers)
        signers = [
            key
            for name in sorted(self.audits)
            for key in _extent_signers(verifiers[name], result.checkpoints.get(name))
        ]
        statement, failure = _opened(text, signers, ExportStatement.parse, _export_origins)
        if statement is None:
            return [*problems, f"line {number}: {EXPORT_NOTE_ATTRIBUTE}: {failure}"]
        said = f"audit's statement of the export (line {number})"
        case = self.case()
        if case is not None and statement.case_id != case:
            return [*problems, f"{said} is of case {statement.case_id}, not of case {case}"]
        result.extent = (statement.case_id, statement.at.isoformat())
        self.statement = statement
        if statement.lines != result.lines:
            problems.append(
                f"the export holds {result.lines} lines, {said} {statement.lines}: lines were"
                " removed or added"
            )
        if statement.ends or statement.counts:
            problems += self._streams(statement, said, result)
        return problems + self._recorded_after(statement, said)

    def _recorded_after(self, statement: ExportStatement, said: str) -> list[str]:
        """Every event of an export was recorded before audit stated it (its first pass read
        them): a line recorded later, beyond the clocks' drift (the logs' hosts' and audit's),
        is another export's, put in this one's place."""
        latest = statement.at + OCCURRED_AT_CLOCK_SKEW
        return [
            f"line {number}: event {event_id} was recorded at {at.isoformat()}, after {said}"
            f" at {statement.at.isoformat()}: it is not of this export"
            for at, number, event_id in self.recorded_at
            if at > latest
        ]

    def unvouched_withheld(self) -> tuple[list[str], list[str]]:
        """Lines marked redacted that audit's verified statement does not name withheld with
        their digest (one problem per line: a proof may have been stripped, or the line
        changed), and lines the statement names withheld that the export holds otherwise."""
        named = {} if self.statement is None else self.statement.withheld
        by_service = {(o.rsplit("/", 1)[-1], s, n): d for (o, s, n), d in named.items()}
        unvouched = []
        held = set()
        for line in self.withheld:
            held.add(line.place)
            digest = by_service.get(line.place)
            service, stream, sequence = line.place
            if digest == line.digest:
                continue
            if self.statement is None:
                problem = (
                    f"marked {REDACTED_ATTRIBUTE} without a {PROOF_ATTRIBUTE}, but no verified"
                    " statement of audit's names it withheld"
                )
            elif digest is None:
                problem = (
                    f"marked {REDACTED_ATTRIBUTE} without a {PROOF_ATTRIBUTE}, but audit's"
                    f" statement does not name sequence {sequence} of stream {stream} of"
                    f" {service} withheld: its proof may have been stripped"
                )
            else:
                problem = (
                    f"marked {REDACTED_ATTRIBUTE}, but it is not the line audit's statement"
                    f" names withheld (sequence {sequence} of stream {stream} of {service}):"
                    " it was changed"
                )
            unvouched.append(f"line {line.number}: {line.label} {problem}")
        unheld = [
            f"audit's statement names sequence {sequence} of stream {stream} of {service}"
            " withheld, but the export holds no such withheld line"
            for (service, stream, sequence) in sorted(set(by_service) - held)
        ]
        return unvouched, unheld

    def _streams(
        self, statement: ExportStatement, said: str, result: ExportVerification
    ) -> list[str]:
        """Each stream against the statement, by service and name (a statement names logs by
        their origins, a line its service by its source)."""
        ends = {(o.rsplit("/", 1)[-1], s): n for (o, s), n in statement.ends.items()}
        counts = {(o.rsplit("/", 1)[-1], s): n for (o, s), n in statement.counts.items()}
        lines_of = {(o.rsplit("/", 1)[-1], s): d for (o, s), d in statement.lines_of.items()}
        # Past the bound audit states the one-key streams' ends alone (export_note): the
        # others are then counted in the lines only.
        uncounted = not counts and len(self.stream_lines) > export_note.MAX_STREAMS
        problems = []
        held = set()
        for (source, stream), lines in sorted(self.stream_lines.items()):
            key = (service_of_source(source), stream)
            held.add(key)
            named = f"stream {stream} of {key[0]}"
            sequences = self.sequences.get((source, stream))
            if sequences is not None and key in ends:
                last = max(sequences)
                if last < ends[key]:
                    problems.append(
                        f"{named} ends at sequence {last}, {said} at {ends[key]}: its last"
                        " lines were cut"
                    )
                elif last > ends[key]:
                    problems.append(f"{named} goes on to sequence {last}, past {said}'s end")
            elif sequences is None and key in counts:
                if lines != counts[key]:
                    problems.append(f"{named} holds {lines} lines, {said} {counts[key]}")
                elif key not in lines_of:
                    result.counted_only.append(named)
                elif sequences_digest(self.shared_sequences[source, stream]) != lines_of[key]:
                    problems.append(
                        f"{named} holds {lines} lines, as {said} counts, but not the lines it"
                        " names: a line was swapped for another event of the stream"
                    )
            elif not (sequences is None and uncounted):
                problems.append(f"{named} is exported, but {said} does not name it")
        for service, stream in sorted(set(ends) - held):
            problems.append(
                f"stream {stream} of {service} is missing: {said} ends it at"
                f" {ends[service, stream]}"
            )
        for service, stream in sorted(set(counts) - held):
            problems.append(
                f"stream {stream} of {service} is missing: {said} gives it"
                f" {counts[service, stream]} lines"
            )
        return problems

    def case(self) -> str | None:
        """The export's case: the first subject of a line that is no client's."""
        cases = [(line, s) for s, (line, _) in self.subjects.items() if s not in self.clients]
        return min(cases)[1] if cases else None

    def repeated(self, recorded: RecordedEvent, number: int) -> str | None:
        event_id = str(recorded.event_id)
        first = self.lines_by_id.setdefault(event_id, number)
        if first != number:
            return f"event {event_id} repeats line {first}"
        key = (recorded.metadata.source, recorded.stream)
        self.stream_lines[key] = self.stream_lines.get(key, 0) + 1
        if travels_under_one_key(recorded.stream, recorded.subject):
            self.sequences.setdefault(key, {})[recorded.sequence] = number
        else:
            self.shared_sequences.setdefault(key, []).append(recorded.sequence)
        self.recorded_at.append((recorded.recorded_at, number, event_id))
        occurred, stored = to_micros(recorded.metadata.occurred_at), to_micros(recorded.recorded_at)
        self.placed.setdefault(key, []).append(_Placed(number, occurred, stored, recorded.sequence))
        return None

    def gaps(self) -> list[str]:
        problems = []
        for (source, stream), lines in sorted(self.sequences.items()):
            missing = next((n for n in range(1, max(lines) + 1) if n not in lines), None)
            if missing is not None:
                problems.append(
                    f"stream {stream} of {source}: sequence {missing} is missing (the export"
                    f" holds {len(lines)} of its {max(lines)} events)"
                )
        return problems

    def out_of_order(self) -> list[str]:
        """An export holds a case's lines in the order of one clock (``export_case``'s basis:
        when they occurred, or when they were recorded; the other clock, then the sequence,
        settling ties), which it does not state: each stream's lines must follow one of the two
        orders, the same for every stream, by the times their lines carry (their proofs cover
        them). Each line still proves its event, so lines swapped (a case's reopening before
        its opening) passed. Not simply by sequence: on the occurred clock a late write-up
        comes before the stream's events dated after it."""
        occurred = self._first_out_of_order("occurred")
        recorded = self._first_out_of_order("recorded")
        if occurred is None or recorded is None:
            return []
        if occurred == recorded:
            return [
                f"{occurred.told()}: out of the order of when they occurred and of when they"
                " were recorded, the orders an export follows (lines were reordered)"
            ]
        return [
            f"{occurred.told()}, out of the order of when they occurred, and {recorded.told()},"
            " out of the order of when they were recorded: an export follows one of them"
            " (lines were reordered)"
        ]

    def _first_out_of_order(self, clock: _Clock) -> _Misplaced | None:
        """The first two lines of a stream out of ``clock``'s order, in the export's order."""
        found = []
        for (source, stream), placed in self.placed.items():
            for before, after in itertools.pairwise(placed):
                if after.order(clock) < before.order(clock):
                    found.append(_Misplaced(source, stream, before, after))
                    break
        return min(found, key=lambda misplaced: misplaced.after.number, default=None)


_Clock = Literal["occurred", "recorded"]


@dataclass(frozen=True)
class _Placed:
    """A line of a stream: where it is, and what orders it on either clock."""

    number: int
    occurred: int
    recorded: int
    """Microseconds since the epoch."""
    sequence: int

    def order(self, clock: _Clock) -> tuple[int, int, int]:
        """Its place on ``clock`` among its stream's lines (as audit's timeline sorts them)."""
        if clock == "occurred":
            return self.occurred, self.recorded, self.sequence
        return self.recorded, self.occurred, self.sequence


@dataclass(frozen=True)
class _Misplaced:
    source: str
    stream: str
    before: _Placed
    after: _Placed

    def told(self) -> str:
        return (
            f"line {self.after.number}: sequence {self.after.sequence} of stream {self.stream}"
            f" of {self.source} comes after sequence {self.before.sequence} (line"
            f" {self.before.number})"
        )


def _verify_line(
    line: str,
    registry: EventRegistry,
    verifiers: Mapping[str, LogKeys],
    result: ExportVerification,
    decode: Any,
    whole: _WholeExport,
    number: int,
) -> str | None:
    try:
        document = strict_json(line)
    except ValueError as error:
        return str(error)
    if not isinstance(document, dict):
        return "not a JSON object"
    try:
        recorded: RecordedEvent = decode(document, registry)
    except InvalidEventError as error:
        return f"not a casetrail CloudEvent ({error})"
    try:
        canonical = canonical_of_record(recorded)
    except UnicodeEncodeError as error:
        # The decoder refuses a lone surrogate in the envelope's texts and the data's (sealed
        # or not): one it missed has no canonical bytes, and fails its line alone.
        return (
            f"not a casetrail CloudEvent ({error.object[:80]!r} is no Unicode text: {error.reason})"
        )
    if (repeated := whole.repeated(recorded, number)) is not None:
        return repeated
    whole.subject(recorded, number)
    label = f"event {document.get('id')}"
    for attribute, kept in (
        (PENDING_NOTE_ATTRIBUTE, whole.statements),
        (EXPORT_NOTE_ATTRIBUTE, whole.extents),
    ):
        statement = document.get(attribute)
        if statement is not None:
            if not isinstance(statement, str):
                return f"{label}: {attribute} is not a text"
            kept.append((number, statement))
    proof_text, note = document.get(PROOF_ATTRIBUTE), document.get(CHECKPOINT_ATTRIBUTE)
    pending_text = document.get(PENDING_ATTRIBUTE)
    if proof_text is None and note is None and isinstance(pending_text, str):
        return _pending(pending_text, label, recorded, result, whole, number)
    redacted = document.get(REDACTED_ATTRIBUTE)
    if proof_text is None and note is None and pending_text is None and redacted is not None:
        if not isinstance(redacted, str) or not redacted:
            return f"{label}: {REDACTED_ATTRIBUTE} is not a list of fields"
        place = (service_of_source(recorded.metadata.source), recorded.stream, recorded.sequence)
        whole.withheld.append(_Withheld(number, label, place, withheld_digest(recorded)))
        return _WITHHELD
    if not isinstance(proof_text, str) or not isinstance(note, str):
        return f"{label} carries no {PROOF_ATTRIBUTE} and {CHECKPOINT_ATTRIBUTE}"
    try:
        proof = strict_json(proof_text)
        origin, position = str(proof["log"]), int(proof["position"])
        tree_size = int(proof["treesize"])
        hashes = [base64.b64decode(item, validate=True) for item in proof["proof"]]
    except (ValueError, KeyError, TypeError, OverflowError, binascii.Error):
        return f"{label}: {PROOF_ATTRIBUTE} is malformed"
    whole.named(origin, verifiers)
    verifier = verifiers.get(origin)
    if verifier is None:
        return f"{label}: no public key for log {origin!r}"
    try:
        checkpoint = open_checkpoint(note, verifier)
    except NoteError as error:
        return f"{label}: checkpoint of {origin}: {error}"
    if checkpoint.size != tree_size:
        return (
            f"{label}: the proof is for {tree_size} events, the checkpoint signs {checkpoint.size}"
        )
    if position != recorded.position:
        return f"{label}: the proof is for position {position}, the event is at {recorded.position}"
    try:
        verify_inclusion(
            position - 1,
            tree_size,
            leaf_hash(canonical),
            hashes,
            checkpoint.root,
        )
    except ProofError as error:
        return f"{label} (position {position} of {origin}): {error}"
    result.checkpoints[origin] = max(result.checkpoints.get(origin, 0), tree_size)
    whole.proven(recorded)
    return None


def _pending(
    text: str,
    label: str,
    recorded: RecordedEvent,
    result: ExportVerification,
    whole: _WholeExport,
    number: int,
) -> str:
    try:
        document = strict_json(text)
        origin, tree_size = str(document["log"]), int(document["treesize"])
        sign_every = float(document["signevery"])
        alarm = document.get("alarm")
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
        return f"{label}: {PENDING_ATTRIBUTE} is malformed"
    if tree_size < 0 or not 0 <= sign_every < 10**9:
        return f"{label}: {PENDING_ATTRIBUTE} is malformed"
    if alarm is not None and not (isinstance(alarm, str) and len(alarm) <= 1000):
        return f"{label}: {PENDING_ATTRIBUTE} is malformed"
    service = recorded.metadata.source.rsplit("/", 1)[-1]
    if origin.rsplit("/", 1)[-1] != service:
        return f"{label}: {PENDING_ATTRIBUTE} names log {origin!r}, not one of {service}"
    result.sign_every = max(result.sign_every, sign_every)
    stream = (recorded.metadata.source, recorded.stream)
    whole.pending.append(
        _Pending(
            number,
            label,
            origin,
            tree_size,
            recorded.position,
            stream,
            recorded.sequence,
            str(recorded.event_id),
            alarm,
        )
    )
    return _PENDING


def _opened_statement(
    text: str, verifiers: Mapping[str, LogKeys]
) -> tuple[PendingStatement | None, str]:
    """The statement of pending events ``text`` signs, under any key of audit's log
    (``…/audit``): every event it names must be of that agency."""
    signers = [current_key(v) for name, v in sorted(verifiers.items()) if name.endswith("/audit")]
    return _opened(text, signers, PendingStatement.parse, _pending_origins)


def _extent_signers(keys: LogKeys, proven_size: int | None) -> list[Verifier]:
    """The keys of audit's log that may sign an export's statement of its extent: audit signs
    its own log as it exports, so the export's lines of that log are proven against a
    checkpoint its signing key then signed: the keys valid for that size (a key retired since
    still vouches for the exports it signed while it was current). An export with no proven
    line of audit's log: the current key only."""
    if proven_size is None:
        return [current_key(keys)]
    return schedule_of(keys).valid_for(proven_size) or [current_key(keys)]


def _pending_origins(statement: PendingStatement) -> Iterable[str]:
    return (entry.origin for entry in statement.entries)


def _export_origins(statement: ExportStatement) -> Iterable[str]:
    return statement.origins


_Statement = TypeVar("_Statement", PendingStatement, ExportStatement)


def _opened(
    text: str,
    signers: Sequence[Verifier],
    parse: Callable[[str], _Statement],
    origins: Callable[[_Statement], Iterable[str]],
) -> tuple[_Statement | None, str]:
    """The statement ``text`` signs, once one of ``signers`` (keys of audit's log, as the
    caller chose them: ``_extent_signers``, ``_opened_statement``) verifies it. Every log it
    names (``origins``) must be of its signer's agency."""
    if not signers:
        return None, "no public key of audit's log to check it with"
    failures = []
    for verifier in signers:
        try:
            statement = parse(open_note(text, verifier))
        except NoteError as error:
            failures.append(str(error))
            continue
        if any(audit_origin(origin) != verifier.name for origin in origins(statement)):
            return None, f"names logs of another agency than its signer {verifier.name}"
        return statement, ""
    return None, "; ".join(failures)
