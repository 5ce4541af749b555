"""Topics as code: the case-event topic, one dead-letter topic per consumer group, and the
ledger's checkpoint topic (one partition: one total order of every log's checkpoints).

``ensure_topics`` creates what is missing and checks what exists; it is idempotent and
safe to call from every service at start-up (the broker refuses automatic topic creation).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from casetrail_platform.bus.errors import TopicConfigurationError
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.typed_numbers import whole_number
from events.topics import (
    DEAD_LETTER_PARTITIONS,
    DEFAULT_CASE_EVENTS_TOPIC,
    LEDGER_CHECKPOINTS_PARTITIONS,
    LEDGER_CHECKPOINTS_TOPIC,
    PRODUCTION_MIN_INSYNC_REPLICAS,
    PRODUCTION_PARTITIONS,
    PRODUCTION_REPLICATION_FACTOR,
    TOPIC_RETENTION,
    check_topic_name,
    dead_letter_topic,
)

log = logging.getLogger(__name__)

CASE_EVENTS_MAX_MESSAGE_BYTES = 1_048_588
"""The largest record the case-event topic takes: Kafka's default ``message.max.bytes``,
which it keeps."""
DEAD_LETTER_MAX_MESSAGE_BYTES = CASE_EVENTS_MAX_MESSAGE_BYTES + 64 * 1024
"""The largest record a dead-letter topic takes: any case-event record plus the
``casetrail_dlq_*`` headers its letter adds (up to about 2.3 KB), with room to spare."""

__all__ = [
    "CASE_EVENTS_MAX_MESSAGE_BYTES",
    "DEAD_LETTER_MAX_MESSAGE_BYTES",
    "DEFAULT_CASE_EVENTS_TOPIC",
    "TopicSettings",
    "create_topics",
    "dead_letter_topic",
    "ensure_dead_letter_topics",
    "ensure_topics",
]


@dataclass(frozen=True, slots=True)
class TopicSettings:
    """Development defaults (one broker). Production uses ``TopicSettings.production()``, or
    ``from_env`` with the Helm chart's variables: replication factor 3 and
    ``min.insync.replicas=2``, so that with ``acks=all`` a write
    acknowledged by the bus survives the loss of any one broker, and a partition refuses
    writes rather than accept them on a single copy. Unclean leader election is always
    disabled: an out-of-sync replica must never become leader and silently drop
    acknowledged events.

    Case events are kept forever (``retention.ms=-1``): a new service joins by reading the
    whole history. ``cleanup.policy=delete`` (never compaction: every event of a case
    shares its key and each one matters). Dead letters are kept forever too, until someone
    has dealt with them; their topics take records ``DEAD_LETTER_MAX_MESSAGE_BYTES`` long, so
    that the letter of any case-event record fits.

    Changing ``partitions`` of an existing topic moves cases to other partitions and
    breaks their order; ``ensure_topics`` refuses a mismatch instead of altering it.
    """

    case_events_topic: str = DEFAULT_CASE_EVENTS_TOPIC
    partitions: int = 6
    replication_factor: int = 1
    min_insync_replicas: int = 1
    dead_letter_partitions: int = DEAD_LETTER_PARTITIONS

    def __post_init__(self) -> None:
        check_topic_name(self.case_events_topic)
        if self.partitions < 1 or self.dead_letter_partitions < 1:
            raise ValueError("topics need at least one partition")
        if not 1 <= self.min_insync_replicas <= self.replication_factor:
            raise ValueError("min_insync_replicas must be between 1 and replication_factor")

    @classmethod
    def production(
        cls,
        case_events_topic: str = DEFAULT_CASE_EVENTS_TOPIC,
        partitions: int = PRODUCTION_PARTITIONS,
    ) -> TopicSettings:
        return cls(
            case_events_topic=case_events_topic,
            partitions=partitions,
            replication_factor=PRODUCTION_REPLICATION_FACTOR,
            min_insync_replicas=PRODUCTION_MIN_INSYNC_REPLICAS,
        )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], case_events_topic: str | None = None
    ) -> TopicSettings:
        """The topics a distributed process creates when missing, from the variables the Helm
        chart sets: ``CASETRAIL_CASE_EVENTS_TOPIC`` (unless ``case_events_topic`` is given),
        ``CASETRAIL_CASE_EVENTS_PARTITIONS``, ``CASETRAIL_DEAD_LETTER_PARTITIONS``,
        ``CASETRAIL_KAFKA_REPLICATION_FACTOR`` and ``CASETRAIL_KAFKA_MIN_INSYNC_REPLICAS``.
        Unset, the development defaults: the local test broker is a single one, where only
        replication 1 can be created. Raises ``ValueError`` naming a malformed variable."""
        defaults = cls()
        return cls(
            case_events_topic=case_events_topic
            or environ.get("CASETRAIL_CASE_EVENTS_TOPIC", "").strip()
            or defaults.case_events_topic,
            partitions=whole_number(
                environ, "CASETRAIL_CASE_EVENTS_PARTITIONS", defaults.partitions
            ),
            dead_letter_partitions=whole_number(
                environ, "CASETRAIL_DEAD_LETTER_PARTITIONS", defaults.dead_letter_partitions
            ),
            replication_factor=whole_number(
                environ, "CASETRAIL_KAFKA_REPLICATION_FACTOR", defaults.replication_factor
            ),
            min_insync_replicas=whole_number(
                environ, "CASETRAIL_KAFKA_MIN_INSYNC_REPLICAS", defaults.min_insync_replicas
            ),
        )

    def topic_config(self) -> dict[str, str]:
        return {
            **TOPIC_RETENTION,
            "min.insync.replicas": str(self.min_insync_replicas),
            "unclean.leader.election.enable": "false",
        }

    def ledger_topic(self) -> NewTopic:
        return NewTopic(
            LEDGER_CHECKPOINTS_TOPIC,
            LEDGER_CHECKPOINTS_PARTITIONS,
            self.replication_factor,
            topic_configs=self.topic_config(),
        )

    def new_topics(self, groups: Iterable[str] = ()) -> list[NewTopic]:
        topics = [
            NewTopic(
                self.case_events_topic,
                self.partitions,
                self.replication_factor,
                topic_configs=self.topic_config(),
            )
        ]
        for group in groups:
            topics.append(
                NewTopic(
                    dead_letter_topic(group),
                    self.dead_letter_partitions,
                    self.replication_factor,
                    topic_configs={
                        **self.topic_config(),
                        "max.message.bytes": str(DEAD_LETTER_MAX_MESSAGE_BYTES),
                    },
                )
            )
        return topics


async def ensure_topics(
    kafka: KafkaSettings, topics: TopicSettings, groups: Iterable[str] = ()
) -> None:
    """Create the case-event topic, the dead-letter topics of ``groups`` and the ledger's
    checkpoint topic if missing.

    Raises ``TopicConfigurationError`` if one exists with another partition count.
    """
    await create_topics(kafka, [*topics.new_topics(groups), topics.ledger_topic()])


async def ensure_dead_letter_topics(
    kafka: KafkaSettings, topics: TopicSettings, groups: Iterable[str]
) -> None:
    """Create the dead-letter topics of ``groups`` if missing (subscribers call this)."""
    await create_topics(kafka, topics.new_topics(groups)[1:])


async def create_topics(kafka: KafkaSettings, new_topics: list[NewTopic]) -> None:
    """Create ``new_topics`` that do not exist yet; check the partitions of those that do."""
    if not new_topics:
        return
    wanted = {topic.name: topic for topic in new_topics}
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id=f"{kafka.client_id}-admin",
        request_timeout_ms=kafka.request_timeout_ms,
        **kafka.security.client_options(),
    )
    try:
        await admin.start()
        response = await admin.create_topics(list(wanted.values()))
        existing: list[str] = []
        for topic_error in response.topic_errors:
            name, code = topic_error[0], topic_error[1]
            error_type = for_code(code)
            if code == 0:
                log.info("created topic %s", name)
            elif error_type is TopicAlreadyExistsError:
                existing.append(name)
            else:
                message = topic_error[2] if len(topic_error) > 2 else ""
                raise error_type(f"creating topic {name}: {message}")
        if existing:
            for described in await admin.describe_topics(existing):
                _check_partitions(described, wanted)
    finally:
        await admin.close()


def _check_partitions(described: dict[str, Any], wanted: dict[str, NewTopic]) -> None:
    name = described["topic"]
    actual = len(described.get("partitions") or [])
    if described.get("error_code") or not actual:
        # Created a moment ago by someone else (e.g. another member of the same group) and
        # not visible yet: nothing to compare, and they used the same settings code.
        log.debug("topic %s exists but is not described yet", name)
        return
    expected = wanted[name].num_partitions
    if actual != expected:
        raise TopicConfigurationError(
            f"topic {name!r} has {actual} partitions, settings say {expected}; changing the"
            " partition count moves cases between partitions, so it is never done"
            " automatically"
        )
