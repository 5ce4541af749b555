"""``topic_partitions`` closes its admin client whatever happens, a failed start too: a start
that fails after connecting (its version probe timed out, say) would otherwise leave the
connections it opened until the process ends, one more each time the caller retries."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from casetrail_platform.bus import kafka_clients
from casetrail_platform.bus.kafka_settings import KafkaSettings


class FailingStart(AIOKafkaAdminClient):  # type: ignore[misc]
    closed: list[FailingStart] = []

    def __init__(self, **options: Any) -> None:
        self.options = options

    async def start(self) -> None:
        raise KafkaConnectionError("version probe timed out")

    async def close(self) -> None:
        FailingStart.closed.append(self)


async def test_an_admin_client_whose_start_failed_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka_clients, "AIOKafkaAdminClient", FailingStart)
    with pytest.raises(KafkaConnectionError):
        await kafka_clients.topic_partitions(
            KafkaSettings(bootstrap_servers="127.0.0.1:1"), "casetrail.cases", "test"
        )
    assert len(FailingStart.closed) == 1
