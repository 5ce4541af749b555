"""Topic names shared by every bus adapter."""

from __future__ import annotations

import re

DEFAULT_CASE_EVENTS_TOPIC = "casetrail.case-events"
LEDGER_CHECKPOINTS_TOPIC = "casetrail.ledger-checkpoints"
"""Every service's signed ledger checkpoints (events/ledger/publication.py)."""
DEAD_LETTER_SUFFIX = ".dlq"
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def check_topic_name(name: str) -> None:
    if not _TOPIC_NAME.match(name) or name in {".", ".."}:
        raise ValueError(
            f"topic name {name!r} is invalid: use 1-249 characters from A-Z a-z 0-9 . _ -"
        )


def dead_letter_topic(group: str) -> str:
    """The dead-letter topic of consumer ``group``."""
    topic = f"{group}{DEAD_LETTER_SUFFIX}"
    check_topic_name(topic)
    return topic
