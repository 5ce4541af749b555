"""Tables holding, after each rebalance, the keys of this process's assignment and no others.

Faust's memory store drops, when a rebalance's recovery ends (before ``on_rebalance_end``, so
before ``readiness`` says ready), every key whose partition is no longer assigned
(``Store.on_recovery_completed``). It knows a key's partition only from the changelog record
it restored the key from (``Store._key_partition``), though: a key this process wrote itself
while processing was never placed, so when a second process joined and took its partition the
key stayed, frozen at the handover, and the list views (``/caseload/``, ``/overdue/``) answered
it, ready, beside this process's own rows, recorded in audit as reads.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import faust
from faust.stores.memory import Store as MemoryStore
from faust.types import CodecArg, FutureMessage


class AssignedTable(faust.Table[Any, Any]):
    """A table whose store knows the partition of every key it holds: each change records the
    partition of the changelog record it sends, as a restored record places its key."""

    def send_changelog(
        self,
        partition: int | None,
        key: Any,
        value: Any,
        key_serializer: CodecArg | None = None,
        value_serializer: CodecArg | None = None,
    ) -> FutureMessage:
        sent = super().send_changelog(partition, key, value, key_serializer, value_serializer)
        # Faust places the record before sending it (eager partitioning): the event's partition.
        placed = sent.message.partition
        assert placed is not None
        if value is None:  # a deletion, as a restored record with no value is
            self._key_partitions.pop(key, None)
        else:
            self._key_partitions[key] = placed
        return sent

    @property
    def _key_partitions(self) -> MutableMapping[Any, int]:
        store = self.data
        if not isinstance(store, MemoryStore):
            raise TypeError(f"table {self.name}: a memory store expected, not {store!r}")
        return store._key_partition
