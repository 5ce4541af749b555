"""Audit's signed statement of an export's extent (``ledgerexportnote``).

Each line of an export proves its own event, and a hole in a one-key stream shows, but a cut
at the very end of a stream, or lines of a stream of several cases removed, left every
remaining line verified. So audit signs, once per export, what its first pass found: the
lines it holds, the last sequence of each one-key stream (``travels_under_one_key``: the
case's, its access records', its client's) and the lines of each other stream (a list's
``access-batch-…`` reads, a client's schedule, a budget line: the export holds only the
case's events of those). A C2SP signed note under **audit's own log key**, as the statement
of pending events (``casetrail_platform.ledger.pending``), whose head and bound it shares::

    casetrail.ledger.export.v1
    case <case id>
    at <UTC time, ISO 8601>
    lines <lines of the export>
    end <origin> <stream> <last sequence>    (one per one-key stream)
    count <origin> <stream> <lines> <sha-256 of their sequences, hex>
                                             (one per other stream)
    withheld <origin> <stream> <sequence> <sha-256 of the line's canonical bytes, hex>
                                             (one per line shown with a part withheld)

A count alone let a line of a stream of several cases be swapped for a later event of the
case in that stream, proven by a later export (a budget line's release for its reservation):
the count held, and the export verified whole. So a ``count`` names which lines too: the
SHA-256 (``sequences_digest``) of the sequences of the stream's lines, ascending, each in
decimal followed by a line feed. A ``count`` without it (a statement signed before) is read as
before, its stream checked by its count alone, and ``export_check`` says so.

A line shown with a part withheld from its reader (``casetrailredacted``: the client's erasure
naming a case the reader may not see) is no longer the stored event, so no proof leads from it
to its log's root: audit names it ``withheld``, with the SHA-256 of the canonical bytes
(``export.canonical_of_record``) of the event as the line shows it, and ``export_check``
accepts a line marked redacted only when the verified statement names its stream and sequence
with that digest (any change to the line, or a proof stripped from another line and the mark
put in its place, fails). A statement without such lines reads as before they existed.

A case of more than ``MAX_STREAMS`` streams (each list read that showed it is an
``access-batch-…`` stream of its own) is stated by its lines and its one-key streams' ends (a
few: of the case, its access records, its client, per service), the other streams' counts left
out: a line of those swapped for another then passes, but a one-key stream cut at its end, or
one carried on past it, still fails. The statement rides
the case's ``casetrail.case.opened`` line (its stream's sequence 1: removing that line is a
hole already), or the export's first line while audit holds no opening of the case.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from casetrail_platform.bus.ordering import travels_under_one_key
from casetrail_platform.ledger.export import canonical_of_record
from casetrail_platform.ledger.note import NoteError
from casetrail_platform.ledger.pending import ID_PATTERN, ORIGIN_PATTERN, statement_head
from events.catalog.cases import CaseOpened
from events.envelope import RecordedEvent

EXPORT_NOTE_ATTRIBUTE = "ledgerexportnote"
HEADER = "casetrail.ledger.export.v1"
MAX_STREAMS = 1000
"""Streams a statement names at most: a line of about 330 bytes each (a ``count`` with its
digest, at the longest origin and stream) keeps the note, with the opening it rides, within an
export line's bound (``export_file.MAX_LINE_BYTES``)."""

MAX_WITHHELD = 100
"""Lines shown with a part withheld a statement names at most (a client's erasure or two)."""

_COUNT = r"(0|[1-9]\d{0,18})"
_STREAM = rf"[a-z][a-z-]{{0,30}}-{ID_PATTERN}"
_LINES = re.compile(rf"^lines {_COUNT}$")
_DIGEST = "[0-9a-f]{64}"
_ENTRY = re.compile(rf"^(end|count) ({ORIGIN_PATTERN}) ({_STREAM}) {_COUNT}(?: ({_DIGEST}))?$")
_WITHHELD = re.compile(rf"^withheld ({ORIGIN_PATTERN}) ({_STREAM}) ([1-9]\d{{0,18}}) ({_DIGEST})$")

Stream = tuple[str, str]
"""(producing service, stream): the case's stream of intake and of planning share a name."""

Place = tuple[str, str, int]
"""(log origin or producing service, stream, sequence): one event."""


def withheld_digest(recorded: RecordedEvent) -> str:
    """What a statement names a line shown in part by: the SHA-256 (hex) of the canonical
    bytes of the event as the line shows it."""
    return hashlib.sha256(canonical_of_record(recorded)).hexdigest()


def sequences_digest(sequences: Iterable[int]) -> str:
    """What a statement names the lines of a stream of several cases by: the SHA-256 (hex) of
    their sequences, ascending, each in decimal and followed by a line feed."""
    return hashlib.sha256("".join(f"{n}\n" for n in sorted(sequences)).encode()).hexdigest()


def service_of_source(source: str) -> str:
    """The service a record's ``metadata.source`` (``casetrail/<service>``) names."""
    return source.rsplit("/", 1)[-1]


@dataclass
class ExportExtent:
    """What an export holds, counted as its first pass reads it."""

    lines: int = 0
    streams: dict[Stream, tuple[int, int]] = field(default_factory=dict)
    """Each stream's last sequence and its lines."""
    one_key: set[Stream] = field(default_factory=set)
    """The streams of one subject (``travels_under_one_key``), whole from sequence 1."""
    sequences: dict[Stream, list[int]] = field(default_factory=dict)
    """The sequences of the lines of each other stream (of several cases)."""
    carrier: UUID | None = None
    """The event whose line carries the statement: the case's opening, else the first."""
    withheld: dict[Place, str] = field(default_factory=dict)
    """(service, stream, sequence) of each line shown with a part withheld: its digest."""
    _opened: bool = False

    def add(self, recorded: RecordedEvent) -> None:
        self.lines += 1
        key = (service_of_source(recorded.metadata.source), recorded.stream)
        last, lines = self.streams.get(key, (0, 0))
        self.streams[key] = (max(last, recorded.sequence), lines + 1)
        if travels_under_one_key(recorded.stream, recorded.subject):
            self.one_key.add(key)
        else:
            self.sequences.setdefault(key, []).append(recorded.sequence)
        opening = isinstance(recorded.event, CaseOpened)
        if self.carrier is None or (opening and not self._opened):
            self.carrier = recorded.event_id
            self._opened = opening

    def withhold(self, shown: RecordedEvent) -> None:
        """``shown``, an event added, is exported with a part withheld (as it is here)."""
        key = (service_of_source(shown.metadata.source), shown.stream, shown.sequence)
        self.withheld[key] = withheld_digest(shown)


@dataclass(frozen=True, slots=True)
class ExportStatement:
    case_id: str
    at: datetime
    lines: int
    ends: dict[tuple[str, str], int]
    """(origin, stream) of each one-key stream: its last sequence."""
    counts: dict[tuple[str, str], int]
    """(origin, stream) of each other stream: its lines."""
    withheld: dict[Place, str] = field(default_factory=dict)
    """(origin, stream, sequence) of each line shown with a part withheld: its digest."""
    lines_of: dict[tuple[str, str], str] = field(default_factory=dict)
    """(origin, stream) of each other stream: ``sequences_digest`` of its lines (none in a
    statement signed before audit named them: its streams are stated by their count alone)."""

    @classmethod
    def of(
        cls, case_id: str, at: datetime, extent: ExportExtent, origin: Callable[[str], str]
    ) -> ExportStatement:
        """The statement of ``extent``; ``origin``: the log origin of a service."""
        ends: dict[tuple[str, str], int] = {}
        counts: dict[tuple[str, str], int] = {}
        lines_of: dict[tuple[str, str], str] = {}
        for (service, stream), (last, lines) in extent.streams.items():
            if (service, stream) in extent.one_key:
                ends[(origin(service), stream)] = last
            else:
                counts[(origin(service), stream)] = lines
                if (sequences := extent.sequences.get((service, stream))) is not None:
                    lines_of[(origin(service), stream)] = sequences_digest(sequences)
        if len(extent.streams) > MAX_STREAMS:
            counts, lines_of = {}, {}  # the ends alone (never near the bound: see the module)
        if len(ends) > MAX_STREAMS:
            ends = {}
        # Past the bound the lines left out fail `casetrail verify` (never near it: see above).
        withheld = {
            (origin(service), stream, sequence): digest
            for (service, stream, sequence), digest in sorted(extent.withheld.items())[
                :MAX_WITHHELD
            ]
        }
        return cls(case_id, at, extent.lines, ends, counts, withheld, lines_of)

    def body(self) -> str:
        lines = [
            HEADER,
            f"case {self.case_id}",
            f"at {self.at.astimezone(UTC).isoformat()}",
            f"lines {self.lines}",
        ]
        lines += [f"end {o} {s} {n}" for (o, s), n in sorted(self.ends.items())]
        for (o, s), n in sorted(self.counts.items()):
            digest = self.lines_of.get((o, s))
            lines.append(f"count {o} {s} {n}" if digest is None else f"count {o} {s} {n} {digest}")
        lines += [f"withheld {o} {s} {n} {d}" for (o, s, n), d in sorted(self.withheld.items())]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, body: str) -> ExportStatement:
        case_id, at, rest = statement_head(
            body,
            HEADER,
            MAX_STREAMS + MAX_WITHHELD + 1,
            f"lines (its count, {MAX_STREAMS} streams and {MAX_WITHHELD} withheld lines)",
        )
        lines = _LINES.match(rest[0]) if rest else None
        if lines is None:
            raise NoteError("a statement of an export names its lines after its time")
        named: dict[str, dict[tuple[str, str], int]] = {"end": {}, "count": {}}
        lines_of: dict[tuple[str, str], str] = {}
        withheld: dict[Place, str] = {}
        for line in rest[1:]:
            if (held := _WITHHELD.match(line)) is not None:
                place = (held[1], held[2], int(held[3]))
                if place in withheld:
                    raise NoteError(f"the statement names sequence {held[3]} of {held[2]} twice")
                withheld[place] = held[4]
                continue
            entry = _ENTRY.match(line)
            if entry is None:
                raise NoteError(f"malformed statement line {line[:80]!r}")
            stream = (entry[2], entry[3])
            if stream in named["end"] or stream in named["count"]:
                raise NoteError(f"the statement names stream {entry[3]} of {entry[2]} twice")
            named[entry[1]][stream] = int(entry[4])
            if entry[5] is not None:
                if entry[1] != "count":
                    raise NoteError(f"malformed statement line {line[:80]!r}")
                lines_of[stream] = entry[5]
        if len(named["end"]) + len(named["count"]) > MAX_STREAMS or len(withheld) > MAX_WITHHELD:
            raise NoteError(
                f"a statement names at most {MAX_STREAMS} streams and {MAX_WITHHELD} withheld lines"
            )
        return cls(case_id, at, int(lines[1]), named["end"], named["count"], withheld, lines_of)

    @property
    def origins(self) -> set[str]:
        return {origin for origin, _ in [*self.ends, *self.counts]} | {
            origin for origin, _, _ in self.withheld
        }
