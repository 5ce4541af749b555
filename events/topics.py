"""The public topic contract: topic names, the dead-letter topic of a consumer group, and the
production facts the AsyncAPI document publishes (partitions, replication, retention). The
platform's bus (``casetrail_platform.bus.topics``) creates the topics from them.

Every topic named here (a ``*_TOPIC`` constant) is published to outsiders, so the AsyncAPI
document has a channel at its address (``tests/unit/test_asyncapi_channels.py`` holds that)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

DEFAULT_CASE_EVENTS_TOPIC = "casetrail.case-events"
LEDGER_CHECKPOINTS_TOPIC = "casetrail.ledger-checkpoints"
"""Every service's signed ledger checkpoints (casetrail_platform/ledger/publication.py)."""
DEAD_LETTER_SUFFIX = ".dlq"
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def check_topic_name(name: str) -> None:
    # fullmatch: "$" also matches before a final line feed, a name Kafka refuses.
    if not _TOPIC_NAME.fullmatch(name) or name in {".", ".."}:
        raise ValueError(
            f"topic name {name!r} is invalid: use 1-249 characters from A-Z a-z 0-9 . _ -"
        )


def dead_letter_topic(group: str) -> str:
    """The dead-letter topic of consumer ``group``."""
    topic = f"{group}{DEAD_LETTER_SUFFIX}"
    check_topic_name(topic)
    return topic


PRODUCTION_PARTITIONS = 12
"""Partitions of the case-event topic in production (``TopicSettings.production()``)."""
DEAD_LETTER_PARTITIONS = 1
"""Partitions of each dead-letter topic."""
LEDGER_CHECKPOINTS_PARTITIONS = 1
"""Partitions of the checkpoint topic: one total order of every log's checkpoints."""
PRODUCTION_REPLICATION_FACTOR = 3
PRODUCTION_MIN_INSYNC_REPLICAS = 2
"""With ``acks=all``, a write acknowledged by the bus survives the loss of any one broker."""
TOPIC_RETENTION: Mapping[str, str] = MappingProxyType(
    {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
)
"""Every casetrail topic keeps its records forever and is never compacted (every event of a
case shares its key and each one matters)."""
