"""Dead letters: messages a consumer group gave up on, kept whole with the reason why.

A dead letter is the original message (key, value and headers unchanged, so it can be
replayed as is) plus ``casetrail_dlq_*`` headers saying which group failed it, where it was
read from and why. In Kafka it goes to the group's ``<group>.dlq`` topic. A record too large
for that topic is kept cut (``DeadLetter.cut``: the value's and the headers' first 64 KiB,
header ``casetrail_dlq_truncated``): its letter says what failed and where, and is never
replayed.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass, replace
from pathlib import PurePath

from casetrail_platform.bus.message import BusMessage, Headers, as_headers
from casetrail_platform.commands import CommandRejected
from events.dead_letters import (
    ATTEMPTS,
    EXCEPTION,
    GROUP,
    HEADER_PREFIX,
    OFFSET,
    PARTITION,
    REASON,
    TOPIC,
    TRUNCATED,
    DeadLetterReason,
)
from events.errors import EventError, FieldProblem, InvalidEventError, UnreadableStoredEventError
from events.topics import check_topic_name

_MAX_DETAIL = 2000

_QUOTABLE: tuple[type[BaseException], ...] = (EventError, CommandRejected, OSError, TimeoutError)
"""Errors whose messages name fields, rules and places, never the values of an event: ours
(the catalog's and the commands' rules say so) and the operating system's."""


def failure_text(error: BaseException) -> str:
    """What a dead letter (on a topic kept forever) and the log may say about ``error``.

    Any other error's message may quote the event it failed on (``ValueError(f"bad
    {summary!r}")``, a database's "Key (x)=(...) already exists"), opened sensitive values
    included, so only its type and where it was raised are told; the event itself stays on the
    dead letter for whoever may read it."""
    if isinstance(error, InvalidEventError):
        return _validation_text(error)
    if isinstance(error, UnreadableStoredEventError):
        # Its message embeds the decoding error's text as is: told redacted instead.
        cause = error.__cause__
        problems = (
            _validation_text(cause)
            if isinstance(cause, InvalidEventError)
            else _problems_text(error.problems)
        )
        return f"event {error.sequence} of stream {error.stream!r} does not decode: {problems}"
    if isinstance(error, _QUOTABLE):
        return str(error) or type(error).__name__
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {PurePath(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}{where} (message withheld: it may quote event data)"


_QUOTED = re.compile(r"(?<![A-Za-z])'[^']*'|\"[^\"]*\"|<[^>]*>")
"""A quoted or repr'd fragment of a problem, which may be a value (``f"{value!r} ..."``)."""
_PATH_PART = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*|[0-9]+)(?:\[[0-9]+\])*|line [0-9]+")
"""A field name, a list index (``goals[0]``) or a line number (``line 3: ...``); any other part
of a path is a key taken from the input."""
_PATH_SEPARATOR = re.compile(r"(\.|: )")


def _validation_text(error: InvalidEventError) -> str:
    # Defence in depth: the catalog's problems carry no values, yet a validator added later
    # might quote one (pydantic quotes a discriminator's tag), and a dead-letter topic is never
    # erased. So only the field's path and the problem's words are told: quoted fragments and
    # keys taken from the input are elided.
    return f"invalid event {error.event_type!r}: {_problems_text(error.problems)}"


def _problems_text(problems: list[FieldProblem]) -> str:
    return "; ".join(
        f"{_field_path(problem.field)}: {_QUOTED.sub('…', problem.problem)}" for problem in problems
    )


def _field_path(field: str) -> str:
    # Split keeping the separators: a located problem reads "ce_storeddata: goals[0].statement".
    return "".join(
        part if index % 2 or _PATH_PART.fullmatch(part) else "…"
        for index, part in enumerate(_PATH_SEPARATOR.split(field))
    )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: BusMessage
    group: str
    reason: DeadLetterReason
    detail: str
    exception_type: str
    attempts: int
    truncated_from: int | None = None
    """The size in bytes of the record's whole value when ``message`` holds only its first
    bytes (``cut``): such a letter says what failed and where, but cannot be replayed."""

    def cut(self, keep: int) -> DeadLetter | None:
        """This letter with only the first ``keep`` bytes of its record's value and the first
        of its headers that fit in ``keep`` bytes (for a dead-letter topic that refuses the
        whole record: a foreign record may carry its bulk in its headers); ``None`` if it holds
        no more than that already."""
        value = self.message.value
        headers = _first_fitting(self.message.headers, keep)
        value_fits = value is None or len(value) <= keep
        if value_fits and len(headers) == len(self.message.headers):
            return None
        kept = value if value is None or value_fits else value[:keep]
        whole = len(value or b"") if self.truncated_from is None else self.truncated_from
        return replace(
            self,
            message=replace(self.message, value=kept, headers=headers),
            truncated_from=whole,
        )

    @property
    def reason_text(self) -> str:
        return f"{self.reason.value}: {self.detail}"

    def headers(self) -> Headers:
        """The original headers (minus stale dead-letter ones) plus why it failed."""
        original = tuple(
            (name, value)
            for name, value in self.message.headers
            if not name.startswith(HEADER_PREFIX)
        )
        return (
            *original,
            (REASON, self.reason_text[:_MAX_DETAIL].encode()),
            (GROUP, self.group.encode()),
            (TOPIC, self.message.topic.encode()),
            (PARTITION, str(self.message.partition).encode()),
            (OFFSET, str(self.message.offset).encode()),
            (EXCEPTION, self.exception_type.encode()),
            (ATTEMPTS, str(self.attempts).encode()),
            *(() if self.truncated_from is None else ((TRUNCATED, b"%d" % self.truncated_from),)),
        )


def _first_fitting(headers: Headers, size: int) -> Headers:
    """The first of ``headers`` whose names and values together take at most ``size`` bytes."""
    kept: list[tuple[str, bytes]] = []
    for name, value in headers:
        size -= len(name.encode(errors="replace")) + len(value)
        if size < 0:
            break
        kept.append((name, value))
    return tuple(kept)


def parse_dead_letter(key: bytes | None, value: bytes | None, headers: Headers) -> DeadLetter:
    """Read back a message taken from a dead-letter topic (for inspection and replay).

    Raises ``ValueError`` naming the header that cannot be read, never its value beyond a
    reason's code: a reason without ``": "`` is its detail too, which may quote event data."""
    found = {
        name: raw.decode(errors="replace")
        for name, raw in headers
        if name.startswith(HEADER_PREFIX)
    }
    missing = [name for name in (REASON, GROUP, TOPIC, PARTITION, OFFSET) if name not in found]
    if missing:
        raise ValueError(f"not a dead letter: missing headers {', '.join(missing)}")
    code, _, detail = found[REASON].partition(": ")
    try:
        reason = DeadLetterReason(code)
    except ValueError:
        named = f" {code!r}" if _REASON_CODE.fullmatch(code) else ""
        raise ValueError(f"{REASON}: a reason code{named} this version does not know") from None
    try:
        check_topic_name(found[TOPIC])
    except ValueError:
        raise ValueError(f"{TOPIC}: not a topic name") from None
    original = BusMessage(
        topic=found[TOPIC],
        partition=_whole_number(found, PARTITION),
        offset=_whole_number(found, OFFSET),
        key=key,
        value=value,
        headers=as_headers((n, v) for n, v in headers if not n.startswith(HEADER_PREFIX)),
    )
    return DeadLetter(
        message=original,
        group=found[GROUP],
        reason=reason,
        detail=detail,
        exception_type=found.get(EXCEPTION, ""),
        attempts=_whole_number(found, ATTEMPTS, default="0"),
        truncated_from=_whole_number(found, TRUNCATED) if TRUNCATED in found else None,
    )


_REASON_CODE = re.compile(r"[a-z][a-z0-9_-]{0,39}")
"""What a reason code looks like (``DeadLetterReason``'s values): one that does is named."""


def _whole_number(found: dict[str, str], header: str, default: str | None = None) -> int:
    text = found.get(header, default)
    if text is None or not text.isascii() or not text.isdigit():
        raise ValueError(f"{header}: not a whole number")
    return int(text)
