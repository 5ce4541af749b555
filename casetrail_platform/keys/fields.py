"""Sealing the fields marked ``x-casetrail-sensitive`` (special-category data) or
``x-casetrail-personal`` (who the client is): what subscribers see on the bus and in exports,
and how services entitled to the data read it.

Each sensitive value (a leaf the catalog's JSON schema marks, at any depth: ``factors.
psychological``, ``presenting_needs[0].category``) is replaced by one JSON string::

    ct1~<key owner>~<key version>~<base64url, unpadded: 12-byte nonce || AES-256-GCM ciphertext>

The plaintext is the value's own JSON (a string keeps its quotes, so any JSON value fits). The
key owner is the client id (``case:<case id>`` for a case whose client is unknown here), the
key is that owner's data key at that version, and the GCM associated data is::

    casetrail-field/1 NUL <event id> NUL <field path> NUL <key owner> NUL <key version>

so a sealed value cannot be moved to another event, field or client without failing to open.
A null (absent) value stays null. The data of an event with sealed values is stored and
published as compact JSON with sorted keys (it is then byte-for-byte what any JSON tool that
sorts keys writes back, which keeps ledger proofs of exported events checkable).

Once the owner's key is destroyed (``EraseClient``), a sealed value opens as the erasure
marker: ``"[erased]"`` for text, ``"erased"`` for a code (need category, service kind),
``[]`` for a list and ``null`` for anything else sealed whole (a date of birth, contact details).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic_core import from_json

from casetrail_platform.keys.keyring import ClientErasedError, ClientKeyring, ForgetWatcher
from casetrail_platform.keys.nonces import NONCE_BYTES, random_nonce
from casetrail_platform.keys.port import DataKeyError, KeyUnavailableError
from casetrail_platform.store.guard import UnstorableEventError
from events.catalog.base import SEALED_MARKS, CaseEvent
from events.errors import FieldProblem, InvalidEventError
from events.registry import encode
from events.sealed_values import (
    CIPHERTEXT_PREFIX,
    ERASED_CODE,
    ERASED_FORMS,
    ERASED_TEXT,
    canonical_json,
)

_SEALED_MARK = f'"{CIPHERTEXT_PREFIX}'.encode()
_OWNER = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"
"""A key owner: a client id, ``case:`` and a case id (the catalog's ``Identifier``s), or an
agency-wide owner such as intake's match keys."""
_VERSION = r"[1-9][0-9]{0,8}"
"""A key version: from 1, and within both key tables' integer column."""

_SEALED_KEY = re.compile(
    rb'(?<!\\)"'
    + re.escape(CIPHERTEXT_PREFIX.encode())
    + f"({_OWNER})~({_VERSION})~".encode()
    + rb'[A-Za-z0-9_-]+"(?![ \t\n\r]*:)'
)
"""The key owner and version of a sealed value in JSON bytes: a whole string value. A quote
that opens a string is never escaped (inside a string one always is: free text quoting
``"ct1~...`` names no key), and a string followed by a colon is an object's key."""

_SEALED_VALUE = re.compile(
    re.escape(CIPHERTEXT_PREFIX) + f"({_OWNER})~({_VERSION})~([A-Za-z0-9_-]+)", re.ASCII
)
"""A whole sealed value. Anything else after the prefix (data from elsewhere, or crafted: an
owner of any length, a version past the tables' integers) is unreadable, the same on both
backends, and never asked of the key table."""

_encode_value = json.JSONEncoder(ensure_ascii=False).encode
"""``json.dumps(value, ensure_ascii=False)`` without building an encoder per value."""


def named_keys(stored: Iterable[bytes | None]) -> set[tuple[str, int]]:
    """The keys (owner, version) the sealed values of ``stored`` (event data as stored or
    published) are sealed with."""
    sealed = b"\n".join(data for data in stored if data is not None and _SEALED_MARK in data)
    named = set(_SEALED_KEY.findall(sealed))  # a case's events name the same key
    return {(owner.decode(), int(version)) for owner, version in named}


@dataclass(frozen=True, slots=True)
class _Leaf:
    erased: Any
    """What the value reads as once its key is gone: a value of the field's own type."""


@dataclass(frozen=True, slots=True)
class _Items:
    item: _Node


@dataclass(frozen=True, slots=True)
class _Fields:
    fields: dict[str, _Node]


_Node = _Leaf | _Items | _Fields


class UnreadableFieldError(InvalidEventError):
    """A sealed value does not open with its key (corrupted, or moved from elsewhere)."""


class FieldProtection:
    """Seals and opens the sensitive fields of event data with the clients' keys.

    Without a keyring (a reader not entitled to sensitive data: the caseload processor, an
    offline export verifier, a registry with no protection set) nothing can be sealed and
    every sealed value opens as the erasure marker: withheld reads like erased."""

    def __init__(self, keyring: ClientKeyring | None) -> None:
        self._keyring = keyring

    @property
    def keyring(self) -> ClientKeyring:
        if self._keyring is None:
            raise RuntimeError("this reader holds no keys: it cannot seal sensitive values")
        return self._keyring

    def owner_of(self, event: CaseEvent, *, cached_only: bool = False) -> str:
        """Whose key seals ``event`` (binding a case to its client when the event names both)."""
        client, case = _named_owner(event)
        if client is not None:
            if case is not None:
                self.keyring.bind_case(case, client, cached_only=cached_only)
            return client
        return self._owner_of_subject(event, cached_only=cached_only)

    def _owner_of_subject(self, event: CaseEvent, *, cached_only: bool) -> str:
        """Whose key seals ``event``, an event naming no client: its case's, or its subject's."""
        if event.subject_field == "case_id":
            return self.keyring.owner_of_case(event.subject, cached_only=cached_only)
        return event.subject

    def client_erased(self, event: CaseEvent) -> bool:
        """Whether this reader takes the key that seals ``event`` (``owner_of``, nothing
        bound) as destroyed: the key table says so (``ClientKeyring.is_erased``), so a reader
        holding the live key is never told markers in place of values it can read. A reader
        holding no keys cannot tell and takes it so: it reads every sealed value as erased."""
        if self._keyring is None:
            return True
        cached_only = _FROM_CACHE.get()
        owner, _ = _named_owner(event)  # the client it names, if any
        if owner is None:
            owner = self._owner_of_subject(event, cached_only=cached_only)
        return self._keyring.is_erased(owner, cached_only=cached_only)

    def keys_to_fetch(self, stored: Iterable[bytes | None]) -> set[tuple[str, int]]:
        """The keys (owner, version) that opening the sealed values of ``stored`` (event data
        as stored or published) needs and the keyring does not hold."""
        keyring = self._keyring
        if keyring is None:
            return set()
        return {key for key in named_keys(stored) if not keyring.holds_key(*key)}

    def keys_live(self, keys: Iterable[tuple[str, int]]) -> bool:
        """Whether each of ``keys`` is cached here and not destroyed: values opened with them
        may still be held in memory (``casetrail_platform.folded``). Always true without a
        keyring, which opens nothing."""
        keyring = self._keyring
        return keyring is None or all(keyring.holds_live_key(*key) for key in keys)

    def watch_forgets(self, watcher: ForgetWatcher) -> None:
        """Tell ``watcher`` each owner whose keys this process forgets (an erasure)."""
        if self._keyring is not None:
            self._keyring.watch_forgets(watcher)

    def fetch_keys(self, keys: Iterable[tuple[str, int]]) -> KeyUnavailableError | None:
        """Bring ``keys`` into the keyring's cache (a worker thread's call: it reads the key
        table and unwraps with the KEK); the outage that kept one away, if any. A key it cannot
        fetch is left for the read that needs it, which reports why (unknown key, KMS
        unavailable) where the event is decoded."""
        outage: KeyUnavailableError | None = None
        for owner, version in keys:
            try:
                self.keyring.decryption_key(owner, version)
            except KeyUnavailableError as error:
                outage = error
            except DataKeyError:
                continue
        return outage

    def seal(
        self, event: CaseEvent, event_id: UUID, data: bytes, *, cached_only: bool = False
    ) -> bytes:
        """``data`` (the event's JSON) with every sensitive value sealed. The key is taken
        only for a value to seal: an event whose sensitive fields are all empty needs none
        (and may still be recorded about an erased client). ``cached_only``: raise
        ``KeysNotCachedError`` rather than ask the key table or the KEK.

        Without a keyring ``data`` is stored as it is, and a sensitive value that begins like
        a sealed one (``ct1~``) is refused: every reader would take it for one."""
        plan = sensitive_plan(type(event))
        if self._keyring is None:
            if plan is not None and _SEALED_MARK in data:
                _walk(from_json(data), plan, "", _refusing_sealed_shape(event.event_type))
            return data
        owner = self.owner_of(event, cached_only=cached_only)
        if plan is None:
            return data
        header = f"casetrail-field/1\x00{event_id}\x00"
        sealing: list[tuple[str, bytes, AESGCM]] = []

        def seal_leaf(path: str, value: Any, erased: Any) -> Any:
            # A value spelled as this field's erasure marker ('erased' for a code, '[erased]'
            # for text) would read as erased data while the client is not: refused like any
            # bad field. Only the string markers: an empty list is a real value.
            if isinstance(value, str) and value == erased:
                raise _recorded_marker(event.event_type, path, value)
            if not sealing:
                version, key = self.keyring.encryption_key(owner, cached_only=cached_only)
                prefix = f"{CIPHERTEXT_PREFIX}{owner}~{version}~"
                sealing.append((prefix, f"\x00{owner}\x00{version}".encode(), key))
            prefix, trailer, key = sealing[0]
            nonce = random_nonce()
            plaintext = _encode_value(value).encode()
            sealed = key.encrypt(nonce, plaintext, (header + path).encode() + trailer)
            return prefix + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()

        document = from_json(data)  # pydantic's parser: a fifth of json.loads' time here
        _walk(document, plan, "", seal_leaf)
        # Nothing to seal (every sensitive field empty): the event's own JSON, as a reader who
        # re-encodes the event (``RecordedEvent.data`` of unsealed data) will hash it.
        return canonical_json(document) if sealing else data

    def seal_again(self, event: CaseEvent, event_id: UUID, data: bytes) -> bytes:
        """``seal`` for an event opened from data of an older schema version and upcast (to be
        published at the current one). Once the key that sealed it is destroyed it cannot be
        sealed again: then ``erased(event)`` goes out instead, as every reader reads the
        sealed data it was published with before (a decoder holding keys accepts it only
        while ``client_erased``)."""
        if sensitive_plan(type(event)) is None:
            return data  # nothing to seal: no key (nor the case's owner) is looked up
        try:
            return self.seal(event, event_id, data)
        except (ClientErasedError, UnstorableEventError):
            # Erased, or it already holds a marker (a value under a destroyed key).
            return encode(self.erased(event))

    @staticmethod
    def erased(event: CaseEvent) -> CaseEvent:
        """``event`` once its client's key is destroyed: the erasure marker at every leaf its
        model seals (a null stays null), the marker a sealed value there opens as. Whatever
        the leaf held goes: a value sealed when stored (already its marker), one a release
        stored in clear before the field was marked, or an upcaster's default (a v1 need's
        category ``other``), which no reader of the data sealed at the time was ever told."""
        plan = sensitive_plan(type(event))
        if plan is None:
            return event
        document = json.loads(event.model_dump_json())
        _walk(document, plan, "", _marked)
        return type(event).model_validate(document)

    @staticmethod
    def holds_in_clear(event: CaseEvent, stored: bytes) -> bool:
        """Whether ``stored`` (the data ``event`` was decoded from by a reader holding no key,
        then upcast) holds in clear a value ``event`` holds at a leaf its model seals. Matched
        by value: an upcaster's default there (a need's category) is no stored value."""
        in_stored = set(_clear_scalars(from_json(stored)))
        return any(
            scalar in in_stored
            for value in sensitive_values(event).values()
            if value not in ERASED_FORMS
            for scalar in _clear_scalars(value)
        )

    def open(
        self,
        model: type[CaseEvent],
        data_version: int,
        event_id: str,
        document: dict[str, Any],
    ) -> bool:
        """Open every sealed value of ``document`` (or read it as the erasure marker), in
        place, at the leaves ``model`` marks: text elsewhere that begins like a sealed value
        is the caller's own, and stays as it is. Whether ``document`` held a sealed value
        (data sealed when stored was stored as canonical JSON)."""
        opener, opened = self._opener(model.event_type, event_id)
        if data_version != model.schema_version:
            # A version without a model of its own (a catalog registering no superseded
            # model for it): where its sealed values are is not known.
            _open_everywhere(document, "", opener)
        elif (plan := sensitive_plan(model)) is not None:
            _walk(document, plan, "", opener)
        return bool(opened)

    def _opener(
        self, event_type: str, event_id: str
    ) -> tuple[Callable[[str, Any, Any], Any], list[str]]:
        """What opens one leaf, and the paths of the sealed values it was given."""
        header = f"casetrail-field/1\x00{event_id}\x00"
        opened: list[str] = []

        def open_leaf(path: str, value: Any, erased: Any) -> Any:
            if not isinstance(value, str) or not value.startswith(CIPHERTEXT_PREFIX):
                return value  # stored before sealing existed
            opened.append(path)
            parsed = _SEALED_VALUE.fullmatch(value)
            if parsed is None:
                raise _unreadable(event_type, path)
            owner, version_text, sealed_text = parsed.groups()
            version = int(version_text)
            try:
                sealed = base64.urlsafe_b64decode(sealed_text + "=" * (-len(sealed_text) % 4))
            except ValueError:
                raise _unreadable(event_type, path) from None
            key = (
                None
                if self._keyring is None
                else self._keyring.decryption_key(owner, version, cached_only=_FROM_CACHE.get())
            )
            if key is None:
                return erased
            aad = f"{header}{path}\x00{owner}\x00{version}".encode()
            try:
                plaintext = key.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
            except InvalidTag:
                raise _unreadable(event_type, path) from None
            return from_json(plaintext)

        return open_leaf, opened


_FROM_CACHE: ContextVar[bool] = ContextVar("casetrail_open_from_cache", default=False)
"""Set by ``opening_from_cache``: a key the keyring lacks raises ``KeysNotCachedError``."""


@contextmanager
def opening_from_cache() -> Iterator[None]:
    """Sealed values opened inside (synchronous code) take keys from the keyring's cache only:
    a missing one raises ``KeysNotCachedError`` instead of asking the table or the KEK."""
    token = _FROM_CACHE.set(True)
    try:
        yield
    finally:
        _FROM_CACHE.reset(token)


WITHHELD = FieldProtection(None)
"""How a reader without keys opens sealed values: as the erasure marker."""


def sensitive_values(event: CaseEvent) -> dict[str, Any]:
    """The values ``event`` holds at sensitive leaves, by field path (what sealing hides)."""
    plan = sensitive_plan(type(event))
    found: dict[str, Any] = {}

    def note(path: str, value: Any, erased: Any) -> Any:
        del erased
        found[path] = value
        return value

    if plan is not None:
        _walk(json.loads(event.model_dump_json()), plan, "", note)
    return found


def _marked(path: str, value: Any, erased: Any) -> Any:
    """A leaf walker putting the leaf's erasure marker in place of its value."""
    del path, value
    return erased


def _clear_scalars(value: Any) -> Iterator[str | int | float]:
    """The texts and numbers of ``value`` (parsed JSON), sealed values and markers left out."""
    if isinstance(value, str):
        if not value.startswith(CIPHERTEXT_PREFIX) and value not in (ERASED_TEXT, ERASED_CODE):
            yield value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _clear_scalars(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _clear_scalars(item)


def _named_owner(event: CaseEvent) -> tuple[str | None, str | None]:
    """The client and the case ``event`` names in fields of those names (``None``: absent)."""
    # Looked up in the model's fields (once per model): getattr of a field a model lacks
    # raises inside pydantic, which costs more than sealing the event.
    has_client, has_case = _owner_fields(type(event))
    client = event.client_id if has_client else None  # type: ignore[attr-defined]
    case = event.case_id if has_case else None  # type: ignore[attr-defined]
    return (
        client if isinstance(client, str) else None,
        case if isinstance(case, str) else None,
    )


@cache
def _owner_fields(model: type[CaseEvent]) -> tuple[bool, bool]:
    """Whether ``model`` has a ``client_id`` and a ``case_id`` field."""
    return "client_id" in model.model_fields, "case_id" in model.model_fields


@cache
def sensitive_plan(model: type[CaseEvent]) -> _Fields | None:
    """Where ``model``'s sensitive values are (``None`` when it has none)."""
    schema = model.model_json_schema()
    node = _node(schema, schema.get("$defs", {}), frozenset())
    return node if isinstance(node, _Fields) else None


def _node(schema: Any, definitions: dict[str, Any], seen: frozenset[str]) -> _Node | None:
    if not isinstance(schema, dict):
        return None
    if any(schema.get(mark) for mark in SEALED_MARKS):
        return _Leaf(_erased_form(schema, definitions))
    reference = schema.get("$ref")
    if isinstance(reference, str):
        name = reference.rsplit("/", 1)[-1]
        if name in seen:
            return None
        return _node(definitions.get(name), definitions, seen | {name})
    for combinator in ("anyOf", "oneOf", "allOf"):
        for branch in schema.get(combinator, ()):
            found = _node(branch, definitions, seen)
            if found is not None:
                return found
    properties = schema.get("properties")
    if isinstance(properties, dict):
        fields = {
            name: node
            for name, sub in properties.items()
            if (node := _node(sub, definitions, seen)) is not None
        }
        return _Fields(fields) if fields else None
    if "items" in schema:
        item = _node(schema["items"], definitions, seen)
        return None if item is None else _Items(item)
    return None


def _erased_form(schema: dict[str, Any], definitions: dict[str, Any]) -> Any:
    """The erasure marker of a value of ``schema``: text and codes are marked; a list reads
    empty and anything else (a date, an object: sealed whole) reads absent."""
    if _is_code(schema, definitions):
        return ERASED_CODE
    # The schema itself and, for an optional value, its branches (``anyOf``: the type, null).
    forms = [schema, *(b for b in schema.get("anyOf", ()) if isinstance(b, dict))]
    kinds = {form.get("type") for form in forms}
    if "array" in kinds:
        return []
    if "string" in kinds and not any("format" in form for form in forms):  # a date is not text
        return ERASED_TEXT
    return None


def _is_code(schema: dict[str, Any], definitions: dict[str, Any]) -> bool:
    if "enum" in schema:
        return True
    reference = schema.get("$ref")
    if isinstance(reference, str):
        return "enum" in definitions.get(reference.rsplit("/", 1)[-1], {})
    return any(
        _is_code(branch, definitions)
        for combinator in ("anyOf", "allOf")
        for branch in schema.get(combinator, ())
        if isinstance(branch, dict)
    )


def _walk(value: Any, node: _Node, path: str, leaf: Callable[[str, Any, Any], Any]) -> Any:
    if isinstance(node, _Leaf):
        return leaf(path, value, node.erased)
    if isinstance(node, _Items):
        if isinstance(value, list):
            for index, item in enumerate(value):
                if item is not None:
                    value[index] = _walk(item, node.item, f"{path}[{index}]", leaf)
        return value
    if isinstance(value, dict):
        for name, sub in node.fields.items():
            if value.get(name) is not None:
                value[name] = _walk(value[name], sub, f"{path}.{name}" if path else name, leaf)
    return value


def _open_everywhere(value: Any, path: str, leaf: Callable[[str, Any, Any], Any]) -> Any:
    """Open every sealed value, wherever it is (data of a version no model describes)."""
    if isinstance(value, str):
        return leaf(path, value, ERASED_TEXT) if value.startswith(CIPHERTEXT_PREFIX) else value
    if isinstance(value, list):
        for index, item in enumerate(value):
            value[index] = _open_everywhere(item, f"{path}[{index}]", leaf)
    elif isinstance(value, dict):
        for name, item in value.items():
            value[name] = _open_everywhere(item, f"{path}.{name}" if path else name, leaf)
    return value


def _recorded_marker(event_type: str, path: str, marker: str) -> InvalidEventError:
    return UnstorableEventError(
        event_type,
        [FieldProblem(path, f"{marker!r} only marks erased data; it cannot be recorded")],
    )


def _refusing_sealed_shape(event_type: str) -> Callable[[str, Any, Any], Any]:
    """A leaf walker refusing text that begins like a sealed value (stored unsealed)."""

    def refuse(path: str, value: Any, erased: Any) -> Any:
        del erased
        if isinstance(value, str) and value.startswith(CIPHERTEXT_PREFIX):
            problem = (
                f"text beginning {CIPHERTEXT_PREFIX!r} marks a sealed value; it cannot be recorded"
            )
            raise UnstorableEventError(event_type, [FieldProblem(path, problem)])
        return value

    return refuse


def _unreadable(event_type: str, path: str) -> UnreadableFieldError:
    return UnreadableFieldError(
        event_type, [FieldProblem(path, "sealed value does not open with its key")]
    )
