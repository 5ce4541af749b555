"""A consumer's lag of partitions a rebalance took away from it is dropped, not kept: the member
now reading them reports their lag, and the value left behind would stay frozen (an alert on
the max over pods, the chart's CasetrailConsumerLag, would fire on it forever)."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from casetrail_platform.bus.kafka_consumer import _Rebalance
from casetrail_platform.telemetry.metrics import process_metrics

GROUP = "casetrail.test.revoked-lag"


def _lag(partition: int) -> float | None:
    return process_metrics().registry.get_sample_value(
        "casetrail_consumer_lag_messages", {"group": GROUP, "partition": str(partition)}
    )


async def test_revoked_partitions_lose_their_lag() -> None:
    lag = process_metrics().consumer_lag
    for partition, behind in ((0, 500), (1, 7)):
        lag.labels(GROUP, str(partition)).set(behind)
    listener = _Rebalance(GROUP, asyncio.Lock(), None, None)

    await listener.on_partitions_revoked({TopicPartition("casetrail.case-events", 0)})

    assert _lag(0) is None
    assert _lag(1) == 7
    # A partition it never reported is no error.
    await listener.on_partitions_revoked({TopicPartition("casetrail.case-events", 5)})
