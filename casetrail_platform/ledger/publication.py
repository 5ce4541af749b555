"""Signed checkpoints on Kafka, so that other parties (auditors, other agencies) can keep them.

Topic ``casetrail.ledger-checkpoints`` (``casetrail_platform.bus.topics``): one partition, so every
checkpoint of every log is in one total order; key = the log's origin; value = the signed note
as UTF-8 text (``content-type: text/plain; charset=utf-8``). Kept forever, like case events.
"""

from __future__ import annotations

import asyncio
from typing import Any

from casetrail_platform.bus.kafka_clients import close_quietly, new_producer
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.ledger.port import StoredCheckpoint
from events.topics import LEDGER_CHECKPOINTS_TOPIC


class KafkaCheckpointPublisher:
    def __init__(self, settings: KafkaSettings, topic: str = LEDGER_CHECKPOINTS_TOPIC) -> None:
        self._settings = settings
        self._topic = topic
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def publish(self, checkpoint: StoredCheckpoint) -> None:
        async with self._lock:
            if self._producer is None:
                producer = new_producer(self._settings, f"{self._settings.client_id}-ledger")
                await producer.start()
                self._producer = producer
            origin = checkpoint.note.split("\n", 1)[0]
            await self._producer.send_and_wait(
                self._topic,
                key=origin.encode(),
                value=checkpoint.note.encode(),
                headers=[("content-type", b"text/plain; charset=utf-8")],
            )

    async def stop(self) -> None:
        if self._producer is not None:
            await close_quietly(self._producer, 5.0)
            self._producer = None
