"""How long the broker holds a consumer's fetch, by whether records are flowing.

Flowing: the broker answers at ``fetch_min_bytes`` (64 KiB) or after ``fetch_max_wait_ms``
(20 ms), so under load one poll, and one read-model transaction, covers many events. Quiet
(a poll came back empty after ``poll_timeout_ms``): it answers at the first byte or after
``quiet_fetch_wait_ms`` (500 ms), so an idle consumer group asks twice a second instead of fifty
times, and the first event after a silence is handed over as soon as it is written instead of
after the 20 ms. The next poll that brings records switches back. A poll whose wait was cut
short (a member with skipped records to commit waits less, ``bus.kafka_consumer``) says
nothing when it comes back empty: the fetch under way may simply not have been answered yet.

aiokafka 0.14 builds each fetch request from its fetcher's ``_fetch_min_bytes`` and
``_fetch_max_wait_ms``; it has no public setter, so they are set there. A version without them
keeps the settings it was started with (``adjustable`` is then false; an integration test pins
this to the version in ``requirements.lock``).
"""

from __future__ import annotations

from typing import Any

from casetrail_platform.bus.kafka_settings import KafkaSettings


class FetchPacing:
    def __init__(self, consumer: Any, settings: KafkaSettings) -> None:
        self._fetcher = getattr(consumer, "_fetcher", None)
        self._flowing = (settings.fetch_min_bytes, settings.fetch_max_wait_ms)
        self._quiet = (1, settings.quiet_fetch_wait_ms)
        self._full_wait_ms = settings.poll_timeout_ms
        self._current = self._flowing  # what the consumer was started with

    @property
    def adjustable(self) -> bool:
        fetcher = self._fetcher
        return hasattr(fetcher, "_fetch_min_bytes") and hasattr(fetcher, "_fetch_max_wait_ms")

    @property
    def quiet(self) -> bool:
        return self._current == self._quiet

    def polled(self, records: int, waited_ms: int) -> None:
        """Tell how many records the last poll brought, and how long it was let wait."""
        if not records and waited_ms < self._full_wait_ms:
            return
        wanted = self._flowing if records else self._quiet
        if wanted == self._current or not self.adjustable:
            return
        fetcher = self._fetcher
        fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = wanted  # type: ignore[union-attr]
        self._current = wanted
