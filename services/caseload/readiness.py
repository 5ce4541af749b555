"""Whether the caseload tables hold all of this process's assignment, rebalance after rebalance.

Faust's ``tables.recovery.completed`` is set after the first recovery and never cleared: when a
later rebalance hands partitions over (a process joins, then leaves), the tables are restored
from their changelogs while it still says so, and the views answered from half a table.

``CaseloadApp`` tells it three moments of every rebalance:

1. ``rebalance_started``: Faust's ``on_rebalance_start``, called from aiokafka's revocation
   callback (on the consumer's thread), the first thing of every rebalance;
2. ``assigned``: the new assignment, before Faust drops the revoked partitions from the tables
   and starts restoring the assigned ones (``_on_partitions_assigned``);
3. ``recovered``: Faust's ``on_rebalance_end``, which it calls only once the tables hold the
   latest assignment whole (a recovery a newer assignment overtook stops short of it), and,
   its store having dropped the revoked partitions' keys, nothing else (``tables``).

A recovery can still end after the next rebalance has started (that revocation can come during
the recovery's last seek, before the new assignment): it counts for the rebalance its own
assignment came from, so the process is ready only while no rebalance has started since the
assignment whose tables were recovered.
"""

from __future__ import annotations


class Readiness:
    """Not ``ready`` before the first recovery, nor from the start of each rebalance until its
    tables are recovered."""

    def __init__(self) -> None:
        self._rebalances = 0
        """Rebalances started: written on the consumer's thread only, read on the event loop's
        (one int, whole either way)."""
        self._assigned_in: int | None = None
        """The rebalance the current assignment came from."""
        self._recovered_in: int | None = None
        """The rebalance whose assignment the tables hold entire."""

    def rebalance_started(self) -> None:
        self._rebalances += 1

    def assigned(self) -> None:
        self._assigned_in = self._rebalances

    def recovered(self) -> None:
        self._recovered_in = self._assigned_in

    @property
    def ready(self) -> bool:
        return self._recovered_in is not None and self._recovered_in == self._rebalances
