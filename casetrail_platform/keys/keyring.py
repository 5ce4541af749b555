"""A client's data keys as the services use them: created on first use, unwrapped once and
cached, forgotten for good on erasure.

The cache holds unwrapped keys for ``cache_seconds`` at most: a key destroyed by another process
stops being usable here when its ``casetrail.client.erased`` event arrives (every service
consumes it and calls ``forget``) or, at the latest, when the entry expires. An expired entry
is checked against the key table again; the KEK (a KMS call in production) is asked again only
when the wrapped bytes changed (a rotation), not every ``cache_seconds``.

Every method may read or write the key table or call the KEK, unless told ``cached_only``: the
services first seal from the cache alone and, when that raises ``KeysNotCachedError``, seal
again in a worker thread; a reader fetches the keys it lacks (``holds_key``) in one before
decoding (``casetrail_platform.keys.off_loop``). An event loop never waits on a database or a
KMS.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from casetrail_platform.errors import ConcurrencyError
from casetrail_platform.keys.port import (
    DataKeyError,
    DataKeyTable,
    KeyEncryptionKey,
    StoredDataKey,
    UnknownDataKeyError,
)
from casetrail_platform.telemetry.metrics import counting_key_port_failures

CASE_OWNER_PREFIX = "case:"
"""Owner of the key of a case whose client the key table does not know (a case opened before
keys existed, or by another agency): its events are erased with the client once the case is
bound (``bind_case``)."""


class ClientErasedError(DataKeyError):
    """The client was erased: nothing sensitive may be recorded about them again."""

    RULE = "CLIENT_ERASED"
    """The refusal it is answered with (``grpc_platform.errors``): the services refuse such a
    command under this rule before sealing; this is for a command decided just before the
    erasure was recorded."""

    def __init__(self, owner: str) -> None:
        super().__init__(f"the data key of {owner!r} was destroyed (the client was erased)")
        self.owner = owner


class CaseOfAnotherClientError(ConcurrencyError):
    """The case is bound to another client's key than the event being sealed names: two
    requests under one idempotency key (one case id) opened it for two clients, on two
    replicas, and the other bound it first. Nothing is written: a lost race, so the command
    answers as its retry would (the first request's result, or ``IDEMPOTENCY_KEY_REUSED``)
    once the winner's events are stored; were this one stored, the case's later events would
    be sealed under one client's key while its opening names the other, and erasing the
    client it is recorded for would leave it readable."""

    def __init__(self, case_id: str) -> None:
        super().__init__(
            "",
            -1,
            -1,
            f"case {case_id!r} is bound to another client: a request under the same"
            " idempotency key opened it first",
        )
        self.case_id = case_id


class KeysNotCachedError(Exception):
    """Raised instead of asking the key table or the KEK, by a call told ``cached_only``: the
    caller does the work again where waiting is harmless (a worker thread)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the keys of {name!r} are not all cached")


class ForgetWatcher(Protocol):
    """Something holding values opened with a client's keys (``casetrail_platform.folded``)."""

    def forget_owner(self, owner: str) -> None: ...


class ClientKeyring:
    def __init__(
        self, kek: KeyEncryptionKey, table: DataKeyTable, cache_seconds: float = 60.0
    ) -> None:
        self.kek = kek
        self.table = table
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._keys: dict[tuple[str, int], _CachedKey] = {}
        self._current: dict[str, tuple[float, int]] = {}
        self._case_clients: dict[str, str] = {}
        self._unbound: dict[str, float] = {}
        """Cases the key table bound to no client, and when that was last asked."""
        self._watchers: weakref.WeakSet[ForgetWatcher] = weakref.WeakSet()
        self._forgets: dict[str, int] = {}
        """How many times each owner was forgotten: a key read from the table before a
        ``forget`` (an erasure's) is not cached after it (``_remember``)."""
        self._erased: set[str] = set()
        """Owners the key table said were erased: destroyed is for good, never asked again."""

    def encryption_key(self, owner: str, *, cached_only: bool = False) -> tuple[int, AESGCM]:
        """The version and key new data of ``owner`` is sealed with (created when missing).
        ``cached_only``: raise ``KeysNotCachedError`` rather than ask the table or the KEK."""
        now = time.monotonic()
        cached = self._current.get(owner)
        if cached is not None and now - cached[0] < self._cache_seconds:
            key = self.decryption_key(owner, cached[1], cached_only=cached_only)
            if key is not None:
                return cached[1], key
        if cached_only:
            raise KeysNotCachedError(owner)
        forgets = self._forgets.get(owner, 0)
        stored = self.table.current(owner)
        if stored is None:
            stored = self._create(owner, 1)
        if stored.wrapped is None:
            raise ClientErasedError(owner)
        key = self._remember(stored, forgets)
        assert key is not None
        with self._lock:
            if self._forgets.get(owner, 0) == forgets:
                self._current[owner] = (now, stored.version)
        return stored.version, key

    def decryption_key(
        self, owner: str, version: int, *, cached_only: bool = False
    ) -> AESGCM | None:
        """The key of ``owner`` at ``version``; ``None`` when it was destroyed (erased)."""
        cached = self._fresh_key(owner, version)
        if cached is not None:
            return cached.key
        if cached_only:
            raise KeysNotCachedError(owner)
        forgets = self._forgets.get(owner, 0)
        stored = self.table.version(owner, version)
        if stored is None:
            raise UnknownDataKeyError(owner, version)
        return self._remember(stored, forgets)

    def destroy(self, owner: str) -> int:
        """Destroy every version of ``owner``'s key (idempotent); how many were live."""
        try:
            return self.table.destroy(owner)
        finally:
            # Even when the table could not finish (its retry will): the key is destroyed.
            self.forget(owner)

    def forget(self, owner: str) -> None:
        """Drop what this process cached of ``owner``'s keys."""
        with self._lock:
            for cached in [key for key in self._keys if key[0] == owner]:
                del self._keys[cached]
            self._current.pop(owner, None)
            self._forgets[owner] = self._forgets.get(owner, 0) + 1
            watchers = list(self._watchers)
        # What was opened with the keys goes with them, not only the keys.
        for watcher in watchers:
            watcher.forget_owner(owner)

    def is_erased(self, owner: str, *, cached_only: bool = False) -> bool:
        """Whether ``owner``'s key was destroyed (the client erased), as the key table says:
        a key cached here as live may have been destroyed by another process since (until its
        ``casetrail.client.erased`` arrives), so only an erasure is remembered (one met
        opening a value sealed with a destroyed key too). An owner with no key yet is not
        erased. ``cached_only``: raise ``KeysNotCachedError`` rather than ask the table."""
        if owner in self._erased:
            return True
        if cached_only:
            raise KeysNotCachedError(owner)
        stored = self.table.current(owner)
        if stored is None or stored.wrapped is not None:
            return False
        with self._lock:
            self._erased.add(owner)
        return True

    def watch_forgets(self, watcher: ForgetWatcher) -> None:
        """Have ``forget`` tell ``watcher`` (held weakly) each owner it forgets."""
        with self._lock:
            self._watchers.add(watcher)

    def holds_live_key(self, owner: str, version: int) -> bool:
        """Whether the key is cached and, as of its last check, not destroyed."""
        cached = self._fresh_key(owner, version)
        return cached is not None and cached.key is not None

    def holds_key(self, owner: str, version: int) -> bool:
        """Whether ``decryption_key(owner, version)`` answers from the cache."""
        return self._fresh_key(owner, version) is not None

    def _fresh_key(self, owner: str, version: int) -> _CachedKey | None:
        cached = self._keys.get((owner, version))
        if cached is not None and time.monotonic() - cached.checked < self._cache_seconds:
            return cached
        return None

    def owner_of_case(self, case_id: str, *, cached_only: bool = False) -> str:
        """Whose key seals the sensitive fields of ``case_id``'s events."""
        client = self._case_clients.get(case_id)
        if client is not None:
            return client
        unbound = self._unbound.get(case_id)
        if unbound is not None and time.monotonic() - unbound < self._cache_seconds:
            # Not known a moment ago: asked again only once the entry expires, not per event.
            return CASE_OWNER_PREFIX + case_id
        if cached_only:
            raise KeysNotCachedError(case_id)
        client = self.table.client_of_case(case_id)
        with self._lock:
            if client is None:
                self._unbound[case_id] = time.monotonic()
                return CASE_OWNER_PREFIX + case_id
            self._case_clients[case_id] = client
            self._unbound.pop(case_id, None)
        return client

    def bind_case(self, case_id: str, client_id: str, *, cached_only: bool = False) -> None:
        """Bind ``case_id`` to ``client_id``'s key, or raise ``CaseOfAnotherClientError``
        when the table holds another client for it (cached as the table holds it: a binding
        never changes)."""
        holder = self._case_clients.get(case_id)
        if holder is None:
            if cached_only:
                raise KeysNotCachedError(case_id)
            holder = self.table.bind_case(case_id, client_id)
            with self._lock:
                self._case_clients[case_id] = holder
                self._unbound.pop(case_id, None)
        if holder != client_id:
            raise CaseOfAnotherClientError(case_id)

    def owners_of_client(self, client_id: str, case_ids: Iterable[str] = ()) -> list[str]:
        """Every key owner whose data is the client's: the client and the own keys of their
        cases (``case_ids`` and those the key table binds to the client)."""
        cases = sorted({*case_ids, *self.table.cases_of(client_id)})
        return [client_id] + [CASE_OWNER_PREFIX + case_id for case_id in cases]

    def _create(self, owner: str, version: int) -> StoredDataKey:
        data_key = AESGCM.generate_key(bit_length=256)
        with counting_key_port_failures("wrap"):
            wrapped = self.kek.wrap(data_key, wrap_context(owner, version))
        return self.table.create(owner, version, wrapped, self.kek.key_id)

    def _remember(self, stored: StoredDataKey, forgets: int) -> AESGCM | None:
        """The key ``stored`` wraps, cached unless the owner was forgotten since it was read
        (``forgets``): a look-up in flight while an erasure destroyed the key (a KMS round trip
        long) put the live key back in the cache after ``forget``, and the erased client's
        data kept opening here for ``cache_seconds``."""
        key: AESGCM | None = None
        earlier = self._keys.get((stored.owner, stored.version))
        if stored.wrapped is None:
            with self._lock:
                self._erased.add(stored.owner)  # destroyed: erased, for good
        elif earlier is not None and earlier.key is not None and earlier.wrapped == stored.wrapped:
            key = earlier.key  # checked again, unchanged: the KEK need not unwrap it again
        else:
            context = wrap_context(stored.owner, stored.version)
            with counting_key_port_failures("unwrap"):
                key = AESGCM(self.kek.unwrapper(stored.kek_id).unwrap(stored.wrapped, context))
        with self._lock:
            if self._forgets.get(stored.owner, 0) == forgets:
                self._keys[(stored.owner, stored.version)] = _CachedKey(
                    time.monotonic(), key, stored.wrapped
                )
        return key


@dataclass(frozen=True, slots=True)
class _CachedKey:
    checked: float
    """When the key table last said the key is live (``time.monotonic``)."""
    key: AESGCM | None
    """``None``: destroyed (the client was erased)."""
    wrapped: bytes | None
    """As the table held it then: unchanged bytes unwrap to the same key."""


def wrap_context(owner: str, version: int) -> bytes:
    """Bound to a wrapped key: it unwraps only as the key of this owner and version."""
    return f"casetrail-data-key/1\x00{owner}\x00{version}".encode()
