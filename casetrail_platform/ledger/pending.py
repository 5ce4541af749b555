"""Audit's signed statement of an export's pending events (``ledgerpendingnote``).

A ``ledgerpending`` mark alone is the exporter's word: stripping every proof of one log and
marking its lines pending would leave nothing to tell offline. So audit signs, per page of an
export holding pending events, a statement naming the export's case, when it was made, each log
under an inconsistency alarm, and every event it marked pending (log, that log's tree size,
position, event id). The signature is a C2SP signed note under **audit's own log key** (the
key that signs its checkpoints, ``CheckpointSigner.sign_note``): the body's first line is
``casetrail.ledger.pending.v1``, never an origin, so no checkpoint verifier (ours or Go's
``note.Open`` and checkpoint parsing) can take it for a checkpoint::

    casetrail.ledger.pending.v1
    case <case id>
    at <UTC time, ISO 8601>
    alarm <origin> <first bad position, 0 when unknown>   (one per log under alarm)
    pending <origin> <tree size> <position> <event id>    (one per event marked pending)

The statement travels on the first pending line of its page; ``export_check.verify_export``
accepts a pending mark only when a statement verified under the audit key of the mark's agency
names that very event, and fails every event a statement names that the export does not hold as
pending.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from casetrail_platform.ledger.note import NoteError

PENDING_NOTE_ATTRIBUTE = "ledgerpendingnote"
HEADER = "casetrail.ledger.pending.v1"
MAX_ENTRIES = 1_000
"""An export page holds at most 1,000 events (audit's ``MAX_PAGE_SIZE``), so a statement names
at most as many; a longer one is refused unread. At ~200 bytes a line, a statement at the bound
stays within an event's bound (``limits.MAX_EVENT_BYTES``), so the line it rides keeps within
``export.MAX_LINE_BYTES``: at 10,000 a statement could outgrow the line that must carry it."""
MAX_ALARMS = 64
"""Logs under an alarm a statement names at most: an export names its agency's few logs."""

ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"
ORIGIN_PATTERN = r"casetrail/[a-z0-9][a-z0-9._-]{0,62}/[a-z][a-z0-9_-]{0,62}"
_CASE = re.compile(rf"^case ({ID_PATTERN})$")
_AT = re.compile(r"^at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?\+00:00)$")
_ALARM = re.compile(rf"^alarm ({ORIGIN_PATTERN}) (0|[1-9]\d{{0,18}})$")
_ENTRY = re.compile(
    rf"^pending ({ORIGIN_PATTERN}) (0|[1-9]\d{{0,18}}) ([1-9]\d{{0,18}}) ([0-9a-f-]{{36}})$"
)


@dataclass(frozen=True, slots=True, order=True)
class PendingEntry:
    origin: str
    tree_size: int
    position: int
    event_id: str


@dataclass(frozen=True, slots=True)
class PendingStatement:
    case_id: str
    at: datetime
    alarms: dict[str, int]
    """Origin of each log under an inconsistency alarm: its first bad position (0: unknown)."""
    entries: tuple[PendingEntry, ...]

    def body(self) -> str:
        lines = [HEADER, f"case {self.case_id}", f"at {self.at.astimezone(UTC).isoformat()}"]
        lines += [f"alarm {origin} {at}" for origin, at in sorted(self.alarms.items())]
        lines += [
            f"pending {e.origin} {e.tree_size} {e.position} {e.event_id}" for e in self.entries
        ]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, body: str) -> PendingStatement:
        case_id, at, rest = statement_head(body, HEADER, MAX_ALARMS + MAX_ENTRIES, "lines")
        alarms: dict[str, int] = {}
        entries: list[PendingEntry] = []
        for line in rest:
            if (alarm := _ALARM.match(line)) is not None and not entries:
                alarms[alarm[1]] = int(alarm[2])
            elif (entry := _ENTRY.match(line)) is not None:
                entries.append(PendingEntry(entry[1], int(entry[2]), int(entry[3]), entry[4]))
            else:
                raise NoteError(f"malformed statement line {line[:80]!r}")
        if len(alarms) > MAX_ALARMS or len(entries) > MAX_ENTRIES:
            raise NoteError(
                f"a statement names at most {MAX_ALARMS} alarms and {MAX_ENTRIES} events"
            )
        return cls(case_id, at, alarms, tuple(entries))


def statement_head(body: str, header: str, most: int, of: str) -> tuple[str, datetime, list[str]]:
    """The case and time a statement of audit's (``header`` first) names, and its further
    lines, at most ``most`` of them (``of``: what they name, for the refusal): audit's
    statements share their head and their bound, and a longer one is refused unread."""
    lines = body.split("\n", most + 4)
    if len(lines) > most + 4:
        raise NoteError(f"a statement names at most {most} {of}")
    if len(lines) < 4 or lines[0] != header or lines[-1] != "":
        raise NoteError(f"not a {header} statement")
    case, at = _CASE.match(lines[1]), _AT.match(lines[2])
    if case is None or at is None:
        raise NoteError("a statement names its case, then its time")
    return case[1], datetime.fromisoformat(at[1]), lines[3:-1]


def audit_origin(origin: str) -> str:
    """The origin of audit's log in ``origin``'s agency: the key pending marks are signed by."""
    return origin.rsplit("/", 1)[0] + "/audit"
