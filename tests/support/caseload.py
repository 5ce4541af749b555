"""The caseload app of a unit test, as Faust leaves it once a rebalance's tables are recovered."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from services.caseload.processor import CaseloadApp


def recovered(app: CaseloadApp) -> None:
    """Tells ``app`` what Faust tells it in a rebalance whose tables it restored (its start,
    the assignment, the end): it is ready, and the views answer from the tables."""
    app.readiness.rebalance_started()
    app.readiness.assigned()
    app.readiness.recovered()


def assigned(
    *held: tuple[CaseloadApp | str, Iterable[int]], told: Iterable[CaseloadApp] = ()
) -> None:
    """Gives each app of ``held`` (or of ``told``) what Faust's assignor hands a group of
    them: every process's address (an app's, or one given) with the ``held-cases`` partitions
    it holds."""
    from faust.assignor import PartitionAssignor
    from faust.types.assignor import HostToPartitionMap

    from services.caseload.processor import HELD_CASES

    apps = [app for app, _ in held if not isinstance(app, str)]
    topic = apps[0].tables[HELD_CASES].changelog_topic.get_topic_name()
    group: HostToPartitionMap = {
        app if isinstance(app, str) else str(app.conf.canonical_url): {topic: sorted(partitions)}
        for app, partitions in held
    }
    for app in list(told) or apps:
        assignor = cast(PartitionAssignor, app.assignor)
        assignor.changelog_distribution = group
