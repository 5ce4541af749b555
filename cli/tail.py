"""`casetrail tail`: events of services' own stores as they are appended, as compact CloudEvents
JSON lines (one object per line, as in an export).

Following every event discloses every case, so it is for an authenticated auditor only: the
bearer token (``cli.login.bearer_token``: a flag, the variable or the saved login) is verified
against the issuer the services trust, the access policy decides (``Action.TAIL``), and each
batch of events is recorded as ``casetrail.record.accessed`` in the tailed service's own store,
one access per case in one append, before it is printed. They are the service's own events
(its source, so its ledger proves them and consumers keep its streams in order), told apart
by their stream (``TAIL_STREAMS``: one of its own per append, never a case's access stream)
and the client application they name (``TAIL_CLIENT``). The token is verified again before
each batch: a tail outlives the token it started with, and ends (``refused``, status 1) once
that token is no longer valid, as a call to a service would be refused. A refusal is recorded
where the tail would have been: in each store asked for (``record.access_denied`` under the
id ``TAIL_SUBJECT``). The tail's own access records are
neither printed nor recorded again (two tails would otherwise feed each other forever).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from casetrail_platform.hosting import service_source
from casetrail_platform.identity.errors import InvalidCredential, IssuerUnavailable
from casetrail_platform.identity.principal import Principal
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.policy.decide import decide
from casetrail_platform.policy.guard import AccessControl, AccessDenied, Disclosure
from casetrail_platform.policy.home_agency import home_agency
from casetrail_platform.policy.vocabulary import Action, Decision
from casetrail_platform.store.port import EventStore
from cli.main import SERVICES
from events.catalog.access import AccessPurpose, RecordAccessed
from events.envelope import RecordedEvent

TAIL_STREAMS = "access-tail-"
"""The prefix of the streams the tail records its accesses in, one per append."""
TAIL_STREAM = re.compile(re.escape(TAIL_STREAMS) + "[0-9a-f]{32}")
"""One of them: the prefix and a uuid's 32 hex digits (``AccessControl.own_streams``). The
prefix alone is no mark: a case ``tail-probe1``'s accesses go to ``access-tail-probe1``."""
TAIL_CLIENT = "casetrail-tail"
"""The client application its access records name (as ``x-casetrail-client`` would)."""
TAIL_SUBJECT = "all-cases"
"""Where a refused tail is recorded: it asks for no single case."""
BATCH = 500

Credential = Callable[[], Awaitable[Principal]]
"""The caller's token verified again: raises ``InvalidCredential`` once it has expired."""


def tailed_services(asked: Sequence[str] | None, has_store: Callable[[str], bool]) -> list[str]:
    """The services asked for, each once (one asked twice would print, and record as
    accessed, every event of its store twice); none asked: every service with a store here."""
    if asked:
        return list(dict.fromkeys(asked))
    return [name for name in SERVICES if has_store(name)]


def run(options: argparse.Namespace) -> int:
    from cli.login import bearer_token, trusted_verifier
    from cli.stores import has_local_store, infrastructure, readable_keys

    try:
        # Whose staff may follow the stores: the agency the services serve, as they decide.
        infra = replace(infrastructure(options), home_agency=home_agency(os.environ))
    except ValueError as error:  # a usage error (exit 2), as the runner refuses to start
        raise SystemExit(str(error)) from None
    # Before any store is opened: on the distributed backend, only the issuer its services need.
    verifier = trusted_verifier(Path(options.data_dir), distributed=infra.postgres_dsn is not None)
    names = tailed_services(options.service, lambda name: has_local_store(infra, name))
    missing = [name for name in names if not has_local_store(infra, name)]
    if missing or not names:
        print(
            f"no store for {', '.join(missing) or 'any service'} under {infra.data_dir}",
            file=sys.stderr,
        )
        return 2
    readable_keys(infra)  # the events printed are opened with it, the accesses sealed
    try:
        purpose = AccessPurpose(options.purpose)
    except ValueError:
        print(f"--purpose: unknown purpose {options.purpose!r}", file=sys.stderr)
        return 2
    token = bearer_token(options)
    try:
        principal = replace(asyncio.run(verifier.verify(token)), client=TAIL_CLIENT)
    except (InvalidCredential, IssuerUnavailable) as error:
        print(f"refused: {error}", file=sys.stderr)
        return 1
    decision = decide(
        principal,
        Action.TAIL,
        purpose,
        None,
        home_agency=infra.home_agency,
        now=datetime.now(UTC),
    )
    if not decision.allowed:
        asyncio.run(_record_refusal(infra, names, principal, purpose, decision))
        print(f"refused: {decision.rule}: {decision.reason}", file=sys.stderr)
        return 1

    def credential() -> Awaitable[Principal]:
        return verifier.verify(token)

    ended: list[Exception] = []
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                _tail_all(
                    infra, names, principal, purpose, decision, options.from_start, credential
                )
            )
    except* (InvalidCredential, IssuerUnavailable) as group:
        ended.extend(group.exceptions)
    if ended:
        print(f"refused: {ended[0]}", file=sys.stderr)
        return 1
    return 0


async def _record_refusal(
    infra: Infrastructure,
    services: Sequence[str],
    principal: Principal,
    purpose: AccessPurpose,
    decision: Decision,
) -> None:
    """The refusal, in the store of each service the tail asked for (where its accesses would
    have been recorded had it been allowed)."""
    from casetrail_platform.infrastructure import open_event_store

    for service in services:
        store, _checkpoints, close_store = await open_event_store(infra, service)
        try:
            access = AccessControl(
                store, None, service_source(service), home_agency=infra.home_agency
            )
            with contextlib.suppress(AccessDenied):
                await access.refuse(principal, Action.TAIL, purpose, TAIL_SUBJECT, decision)
        finally:
            await close_store()


async def _tail_all(
    infra: Infrastructure,
    names: list[str],
    principal: Principal,
    purpose: AccessPurpose,
    decision: Decision,
    from_start: bool,
    credential: Credential,
) -> None:
    async with asyncio.TaskGroup() as group:
        for name in names:
            group.create_task(
                _tail(infra, name, principal, purpose, decision, from_start, credential)
            )


async def _tail(
    infra: Infrastructure,
    service: str,
    principal: Principal,
    purpose: AccessPurpose,
    decision: Decision,
    from_start: bool,
    credential: Credential,
) -> None:
    from casetrail_platform.infrastructure import open_event_store

    store, _checkpoints, close_store = await open_event_store(infra, service)
    try:
        access = AccessControl(
            store,
            None,
            service_source(service),
            home_agency=infra.home_agency,
            own_streams=TAIL_STREAMS,
        )
        await follow(store, access, principal, purpose, decision, from_start, credential=credential)
    finally:
        await close_store()


async def follow(
    store: EventStore,
    access: AccessControl,
    principal: Principal,
    purpose: AccessPurpose,
    decision: Decision,
    from_start: bool,
    *,
    credential: Credential,
    idle_timeout: float = 1.0,
) -> None:
    """Record, then print, each batch of events appended after now (or from the start), each
    once ``credential`` still holds (``InvalidCredential`` ends the tail, nothing shown)."""
    from events.cloudevents import to_structured

    position = 0 if from_start else await store.last_position()
    while True:
        batch = await store.read_all(position, BATCH)
        shown = [e for e in batch if not tails_own(e)]
        if shown:
            await credential()
            await access.release(None, principal, purpose, disclosures(decision, shown))
        for recorded in shown:
            print(tail_line(to_structured(recorded)), flush=True)
        if batch:
            position = batch[-1].position
        if len(batch) < BATCH:
            await store.wait_for_append(position, idle_timeout)


def tail_line(document: dict[str, Any]) -> str:
    """One event as a line of JSON, every character beyond ASCII escaped (``\\u202e``), as
    the CLI's other JSON is: a tail is read on a terminal as often as piped, and what staff
    typed (a reason, a provider's name) held a line separator, a C1 control or a
    right-to-left override the terminal acted on, reordering or rewriting the lines shown."""
    return json.dumps(document, separators=(",", ":"))


def tails_own(recorded: RecordedEvent) -> bool:
    """Whether ``recorded`` is a tail's own access record, neither shown nor recorded again:
    in a stream of the tail's shape, naming the tail as its client. Anything else is shown,
    a case's access records whose id starts ``tail-`` among them."""
    event = recorded.event
    return (
        TAIL_STREAM.fullmatch(recorded.stream) is not None
        and isinstance(event, RecordAccessed)
        and event.client_application == TAIL_CLIENT
    )


def disclosures(decision: Decision, shown: Sequence[RecordedEvent]) -> list[Disclosure]:
    """One access per case (the events' subject) shown, with its sections and sensitive fields."""
    from services.audit.domain.access import sections_disclosed, sensitive_fields_shown

    by_case: dict[str, list[RecordedEvent]] = defaultdict(list)
    for recorded in shown:
        by_case[recorded.event.subject].append(recorded)
    return [
        Disclosure(
            case_id,
            decision,
            None,
            (),
            sections_disclosed(e.event for e in events),
            sensitive_fields_shown(e.event for e in events),
        )
        for case_id, events in by_case.items()
    ]
