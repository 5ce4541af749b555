"""Faust's internal topics, created before the consumer joins its group.

Faust declares its changelog and repartition topics itself, but concurrently with the
consumer's first group join. The broker refuses automatic topic creation, so when the group
leader computes the assignment before a declaration lands, that topic is left out ("Ignoring
missing topic") and stays unassigned until the next rebalance: a table that never fills.
Creating them first, with the settings Faust would use, removes the race.
"""

from __future__ import annotations

from typing import Any

from aiokafka.admin import NewTopic
from mode.utils.times import want_seconds


def internal_topics(app: Any) -> list[NewTopic]:
    """Every changelog topic of ``app``'s tables, plus its other internal topics."""
    declared = [table.changelog_topic for table in app.tables.values()]
    declared.extend(app.extra_internal_topics)
    topics: list[NewTopic] = []
    for topic in declared:
        partitions = topic.partitions or app.conf.topic_partitions
        replicas = topic.replicas or app.conf.topic_replication_factor
        topics.extend(
            NewTopic(name, partitions, replicas, topic_configs=topic_config(topic, app))
            for name in topic.topics
        )
    return topics


def topic_config(topic: Any, app: Any) -> dict[str, str]:
    """The broker configuration Faust's own declaration would give ``topic``, with the
    deployment's ``min.insync.replicas`` (Faust sets none: an external cluster's default
    might accept a write on one copy)."""
    config: dict[str, str] = {"min.insync.replicas": str(app.settings.min_insync_replicas)}
    policies = [
        policy
        for policy, wanted in (("compact", topic.compacting), ("delete", topic.deleting))
        if wanted
    ]
    if policies:
        config["cleanup.policy"] = ",".join(policies)
    if topic.retention:
        config["retention.ms"] = str(int(want_seconds(topic.retention) * 1000))
    config.update({str(k): str(v) for k, v in (topic.config or {}).items()})
    return config
