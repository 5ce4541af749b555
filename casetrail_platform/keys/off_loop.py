"""The key table and the KEK asked from a worker thread, never from the event loop.

A keyring answers from its cache nearly always, but a new client's key is created (a table
write and a KEK wrap), a new case is bound to its client (a table write), and every cached
entry is checked again after ``cache_seconds`` (a table read, and a KEK unwrap after a
rotation). With PostgreSQL and a KMS each of those is a network round trip: made on the event
loop it would stall every call the process is serving. So the stores seal an append's events
from the keyring's cache alone and, when it lacks something, again in a worker thread; and the
stores and the bus fetch the keys that the sealed values of records just read name in a worker
thread before those records are decoded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TypeVar

from casetrail_platform.keys.fields import opening_from_cache
from casetrail_platform.keys.keyring import KeysNotCachedError
from casetrail_platform.keys.port import KeyUnavailableError
from events.registry import EventRegistry

T = TypeVar("T")


async def sealing(seal: Callable[[bool], T]) -> T:
    """``seal(cached_only)``: first here from the keyring's cache alone, then, if that raised
    ``KeysNotCachedError`` (nothing was written), again in a worker thread."""
    try:
        return seal(True)
    except KeysNotCachedError:
        return await asyncio.to_thread(seal, False)


async def decoding(decode: Callable[[], T]) -> T:
    """``decode()`` (which opens sealed values): first here with the keyring's cache alone,
    then, if a key was missing, again in a worker thread. For readers that decode what they
    read at once (audit's copies of events), where ``fetch_keys`` would have to find the keys
    in parsed documents."""
    try:
        with opening_from_cache():
            return decode()
    except KeysNotCachedError:
        return await asyncio.to_thread(decode)


async def fetch_keys(
    registry: EventRegistry, stored: Iterable[bytes | None]
) -> KeyUnavailableError | None:
    """Bring the keys that the sealed values of ``stored`` (event data as stored or published)
    name into the keyring's cache, in a worker thread if any is missing, so that decoding the
    records then opens them from the cache. Returns the outage (key table or KMS away) that
    kept a key from being fetched, if one did."""
    protection = registry.protection
    if protection is None:
        return None
    missing = protection.keys_to_fetch(stored)
    if not missing:
        return None
    return await asyncio.to_thread(protection.fetch_keys, sorted(missing))
