"""`casetrail dlq list|replay GROUP`: what a consumer group dead-lettered, and putting it back.

``list`` prints each dead letter of ``<GROUP>.dlq`` with its reason, never a sensitive value:
the fields the catalog marks ``x-casetrail-sensitive`` (``events/schemas/catalog.json``) are
not printed, and their values are cut out of the reason; the reason of a record that cannot
be read (so whose sensitive fields are unknown) is withheld. ``replay`` publishes the letters
not yet replayed back to their topic (see ``casetrail_platform.bus.kafka_dead_letters``); consumers
apply each event once, so a replay repeated or cut short changes nothing. Without GROUP, ``list``
names every dead-letter topic with its count.

Only the Kafka bus keeps dead letters outside a process. The embedded in-process bus keeps
them in the memory of the running process and forgets them on exit; every event is delivered
again on the next start, so restarting it is the embedded replay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

from casetrail_platform.bus.deadletter import DeadLetter
from casetrail_platform.bus.kafka_dead_letters import StoredDeadLetter
from casetrail_platform.bus.kafka_settings import (
    BOOTSTRAP_VARIABLE,
    KafkaSettings,
    bootstrap_problem,
)
from cli.present import shown
from events.cloudevents import KAFKA_HEADER_PREFIX

REDACTED = "[redacted]"
EMBEDDED = (
    "the embedded bus keeps dead letters only in the memory of the running process; restart it"
    " to deliver every event again (consumers apply each once)"
)
# Validation errors quote the offending input (possibly shortened): never print it.
_QUOTED_INPUT = re.compile(r"input_value=.*?(?=, input_type=|\]|$)", re.DOTALL)


def run(options: argparse.Namespace) -> int:
    if options.backend == "embedded":
        print(f"casetrail dlq: {EMBEDDED}", file=sys.stderr)
        return 2
    environ: Mapping[str, str] = os.environ
    if options.bootstrap:
        problem = bootstrap_problem(options.bootstrap)
        if problem is not None:
            print(f"casetrail dlq: --bootstrap: {problem}", file=sys.stderr)
            return 2
        # Only the brokers: the security settings still hold (a TLS or SASL cluster).
        environ = {**os.environ, BOOTSTRAP_VARIABLE: options.bootstrap}
    try:
        settings = KafkaSettings.from_env(environ)  # ValueError naming the variable
    except ValueError as error:
        print(f"casetrail dlq: Kafka settings: {error}", file=sys.stderr)
        return 2
    if options.action == "replay":
        if not options.group:
            print("casetrail dlq replay: name the consumer group", file=sys.stderr)
            return 2
        return asyncio.run(_replay(settings, options.group))
    if not options.group:
        return asyncio.run(_list_topics(settings))
    return asyncio.run(_list(settings, options.group, options.all))


async def _list_topics(settings: KafkaSettings) -> int:
    from casetrail_platform.bus.kafka_dead_letters import dead_letter_topics, list_dead_letters

    for topic in await dead_letter_topics(settings):
        group = topic.removesuffix(".dlq")
        letters = await list_dead_letters(settings, group)
        pending = sum(not stored.replayed for stored in letters)
        print(f"{group}\t{len(letters)} dead letters, {pending} not replayed")
    return 0


async def _list(settings: KafkaSettings, group: str, everything: bool) -> int:
    from casetrail_platform.bus.kafka_dead_letters import list_dead_letters

    letters = await list_dead_letters(settings, group)
    shown = [stored for stored in letters if everything or not stored.replayed]
    for stored in shown:
        print(describe(stored))
    replayed = len(letters) - len(shown)
    print(
        f"{len(shown)} dead letters of {group}"
        + (f" ({replayed} already replayed; --all shows them)" if replayed else "")
    )
    return 0


async def _replay(settings: KafkaSettings, group: str) -> int:
    from casetrail_platform.bus.kafka_dead_letters import replay_dead_letters

    replay = await replay_dead_letters(settings, group)
    for letter in replay.replayed:
        print(f"replayed {_event_id(letter)} to {letter.message.topic}")
    print(f"{len(replay.replayed)} dead letters of {group} replayed")
    for stored in replay.unreadable:
        record = stored.record
        print(
            f"{record.topic}/{record.partition}@{record.offset} not replayed: unreadable"
            f" ({shown(stored.problem)}); its partition's replay stops there",
            file=sys.stderr,
        )
    for letter in replay.truncated:
        original = letter.message
        print(
            f"{_where(letter)} not replayed: truncated (it holds {len(original.value or b'')}"
            f" of its value's {letter.truncated_from} bytes); passed over",
            file=sys.stderr,
        )
    if replay.waiting:
        print(f"{replay.waiting} dead letters wait behind an unreadable one", file=sys.stderr)
    if replay.refused is not None:
        letter, why = replay.refused
        print(
            f"stopped: {letter.message.topic} refused {_event_id(letter)} ({shown(why)});"
            " the letters before it are replayed, run again once the cause is fixed",
            file=sys.stderr,
        )
    return 1 if replay.refused or replay.unreadable or replay.truncated else 0


def _where(letter: DeadLetter) -> str:
    """Where the letter's record was read from: ``TOPIC/P@OFFSET``."""
    original = letter.message
    return f"{original.topic}/{original.partition}@{original.offset}"


def _event_id(letter: DeadLetter) -> str:
    return _text(dict(letter.message.headers).get(f"{KAFKA_HEADER_PREFIX}id"))


def describe(stored: StoredDeadLetter) -> str:
    """Two lines about one dead letter, without any sensitive value."""
    record = stored.record
    letter = stored.letter
    state = "replayed" if stored.replayed else "pending"
    if letter is not None and letter.truncated_from is not None:
        state = f"truncated from {letter.truncated_from} bytes, never replayed"
    where = f"{record.topic}/{record.partition}@{record.offset}"
    if letter is None:
        return f"{where} [{state}] unreadable: {shown(stored.problem)}"
    headers = dict(letter.message.headers)
    event_type = _text(headers.get(f"{KAFKA_HEADER_PREFIX}type"))
    original = letter.message
    return (
        f"{where} [{state}] {letter.reason.value} after {letter.attempts} attempt(s)"
        f" ({shown(letter.exception_type)})\n"
        f"  event {_text(headers.get(f'{KAFKA_HEADER_PREFIX}id'))} {event_type}"
        f" subject {_text(headers.get(f'{KAFKA_HEADER_PREFIX}subject'))}"
        f" from {original.topic}/{original.partition}@{original.offset}\n"
        f"  reason: {shown(redact(letter.detail, event_type, original.value))}"
    )


def redact(detail: str, event_type: str, value: bytes | None) -> str:
    """``detail`` without the values of the event's sensitive fields (all of it withheld when
    the event's type or data cannot be read)."""
    sensitive = sensitive_fields().get(event_type)
    data = _json(value)
    if sensitive is None or not isinstance(data, dict):
        return "(withheld: the record cannot be read, so its sensitive fields are unknown)"
    detail = _QUOTED_INPUT.sub(f"input_value={REDACTED}", detail)
    secrets = sorted(
        {text for field in sensitive for text in _strings(data.get(field))},
        key=len,
        reverse=True,
    )
    for secret in secrets:
        detail = detail.replace(secret, REDACTED)
    return detail


@cache
def sensitive_fields() -> dict[str, frozenset[str]]:
    """Event type -> its sensitive fields (any version), from the catalog's index."""
    index = json.loads(
        resources.files("events").joinpath("schemas/catalog.json").read_text("utf-8")
    )
    fields: dict[str, set[str]] = {}
    for entry in index["events"]:
        fields.setdefault(entry["type"], set()).update(entry["sensitive_fields"])
    return {event_type: frozenset(names) for event_type, names in fields.items()}


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        if value:
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif value is not None:
        yield str(value)


def _json(value: bytes | None) -> Any:
    try:
        return json.loads(value or b"")
    except ValueError:
        return None


def _text(raw: bytes | None) -> str:
    """A header's value as shown (escaped: anyone who could publish wrote it)."""
    return "?" if raw is None else shown(raw.decode(errors="replace"))
