"""A service's access control over the policy's facts, which its host subscribes to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from casetrail_platform.policy.guard import AccessControl
from casetrail_platform.policy.projection import CaseFactsProjection, CaseFactsReader

if TYPE_CHECKING:
    from casetrail_platform.hosting import ServiceHost


def facts_access_control(host: ServiceHost) -> AccessControl:
    """Subscribes ``host`` to the policy's facts (from the bus) and decides on them; a
    supervisor's CloseCase/ReopenCase first waits for the facts to hold every transfer
    coordination acknowledged before it (``facts_caught_up``), and a read whose right may
    rest on a relationship an event ends for the case's facts on the bus
    (``case_facts_caught_up``: README, "A transfer not delivered yet")."""
    facts = CaseFactsProjection()
    host.subscribe(facts)
    return AccessControl(
        host.store,
        CaseFactsReader(host.read_models),
        host.source,
        home_agency=host.infra.home_agency,
        facts_caught_up=host.caught_up(facts),
        case_facts_caught_up=host.caught_up(facts, frozenset(facts.event_types)),
    )
