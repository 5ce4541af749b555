"""`casetrail rebuild`: replay a service's own store into one of its projections, from zero.

Only projections fed from the service's own store can be rebuilt this way. Those fed from the
bus hold other services' events, which are not in this store: replaying the store into them
would lose those, so they are refused here (rebuilding them means replaying the topic).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from typing import TYPE_CHECKING

from casetrail_platform.projections.port import Projection

if TYPE_CHECKING:
    from casetrail_platform.infrastructure import Infrastructure
    from casetrail_platform.keys.keyring import ClientKeyring

OWN_STORE = {
    "intake": {
        "client-directory": "services.intake.adapters.client_directory:ClientDirectoryProjection",
        "emergency-accesses": (
            "services.intake.adapters.emergency_accesses:EmergencyAccessesProjection"
        ),
    },
    "coordination": {
        "assignments": "services.coordination.adapters.projections:AssignmentsProjection"
    },
}
FROM_BUS = {
    "intake": ("case-closures", "case-facts-v2"),
    "coordination": ("case-facts-v3", "follow-ups", "case-facts-v2"),
    "planning": ("case-view-v7", "staff", "case-facts-v2"),
    "audit": ("timeline-index-v2", "client-trail", "client-cases", "disclosure-index-recorded"),
}
"""Each service's bus-fed projections, by ``_canonical`` name (the chart's topology.yaml lists
their consumer groups, ``casetrail.<service>.<projection>``)."""


def run(options: argparse.Namespace) -> int:
    own = OWN_STORE.get(options.service, {})
    if options.projection is None:
        for name in own:
            print(f"{name:<20} own store: rebuildable")
        for name in FROM_BUS[options.service]:
            print(f"{name:<20} fed from the bus: not rebuildable from the store")
        return 0
    wanted = _own_name(own, options.projection)
    if wanted is None:
        wanted = _canonical(options.projection)
        reason = (
            "is fed from the bus (other services' events are not in this store)"
            if wanted in FROM_BUS[options.service]
            else "is not a projection of this service"
        )
        choices = ", ".join(own) or "none"
        print(f"{options.projection} {reason}; rebuildable here: {choices}", file=sys.stderr)
        return 2
    return asyncio.run(_rebuild(options, _projection(own[wanted])))


def _canonical(name: str) -> str:
    """Projections are named with a service prefix or underscores in places; accept either."""
    return name.rsplit(".", 1)[-1].replace("_", "-")


def _own_name(own: dict[str, str], given: str) -> str | None:
    """The listed name of the own-store projection ``given`` names: the listed name or the
    projection's own (``Projection.name``, the one logs and tracking rows show), with or
    without the service's prefix. A projection renamed so that it is rebuilt
    (``intake.client-directory-v3``) answers to its new name as well."""
    wanted = _canonical(given)
    for listed, reference in own.items():
        if wanted in (listed, _canonical(_projection(reference).name)):
            return listed
    return None


def _projection(reference: str) -> Projection:
    module, _, name = reference.partition(":")
    projection = getattr(importlib.import_module(module), name)()
    assert isinstance(projection, Projection)
    return projection


async def _rebuild(options: argparse.Namespace, projection: Projection) -> int:
    from casetrail_platform.locking.serving import AloneLost
    from cli.stores import has_local_store, infrastructure, readable_keys, where_stored

    infra = infrastructure(options)
    if not has_local_store(infra, options.service):
        print(
            f"{options.service} has no store in {where_stored(infra, options.service)}",
            file=sys.stderr,
        )
        return 2
    # Everything the replay reads with, before the projection is thrown away: a deployment
    # this process cannot read is refused with its documents as they were.
    readable_keys(infra)
    await _keyed_hashes_ready(projection, infra.keyring)
    try:
        return await _rebuild_alone(infra, options.service, projection)
    except AloneLost:
        print(
            f"{options.service} {projection.name}: the rebuild lost its lock session (the"
            " database restarted, or it stopped answering) and stopped, as a replica may have"
            " started since: check that the service is stopped and rebuild again",
            file=sys.stderr,
        )
        return 1


async def _keyed_hashes_ready(projection: Projection, keyring: ClientKeyring | None) -> None:
    """A projection whose documents are keyed by keyed hashes (intake's client directory)
    hashes with the deployment's key, as the running service does: derived now."""
    from services.intake.adapters.client_directory import ClientDirectoryProjection

    if isinstance(projection, ClientDirectoryProjection):
        projection.use_keyring(keyring)
        await projection.match_keys.ready()


async def _rebuild_alone(infra: Infrastructure, service: str, projection: Projection) -> int:
    from tqdm import tqdm

    from casetrail_platform.infrastructure import open_event_store, open_read_models
    from casetrail_platform.locking.serving import alone
    from casetrail_platform.projections.runner import rebuild

    async with alone(infra, service, projection.name) as nobody_follows:
        if not nobody_follows:
            print(
                f"{service} is running (it follows {projection.name}): stop it first,"
                " or it would answer from the half-built projection meanwhile",
                file=sys.stderr,
            )
            return 2
        store, _checkpoints, close_store = await open_event_store(infra, service)
        try:
            read_models = await open_read_models(infra, service)
            try:
                with tqdm(desc=projection.name, unit="event", total=None) as bar:

                    def progress(position: int, last: int) -> None:
                        bar.total = last
                        bar.n = position
                        bar.refresh()

                    position = await rebuild(store, read_models, projection, progress=progress)
            finally:
                await read_models.close()
        finally:
            await close_store()
    print(f"{service} {projection.name}: rebuilt up to position {position}")
    return 0
