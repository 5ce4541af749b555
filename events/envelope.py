"""What travels with every case event: who did it, when, why, and where it is stored.

``NewEvent`` is what a service hands to its event store; ``RecordedEvent`` is what the store
gives back once the event is durable (with its stream sequence, global position and
recorded-at time). ``events.cloudevents`` maps a ``RecordedEvent`` to CloudEvents 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, NamedTuple
from uuid import UUID, uuid4

from events.catalog.base import CaseEvent, Role
from events.errors import InvalidEventError, UnreadableStoredEventError
from events.registry import encode

if TYPE_CHECKING:
    from events.registry import EventRegistry

_SEALED_DATA_MARK = b'"ct1~'
"""``events.sealed_values.SEALED_DATA_MARK``."""


@dataclass(frozen=True, slots=True)
class Actor:
    user_id: str
    role: Role


@dataclass(frozen=True, slots=True)
class EventMetadata:
    """Facts about an event that are not part of its data.

    ``occurred_at`` is when it happened as stated by the actor (it may be earlier than the
    moment it was recorded, e.g. a home visit written up the next day).
    """

    source: str
    actor: Actor
    occurred_at: datetime
    correlation_id: UUID
    causation_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class NewEvent:
    event: CaseEvent
    metadata: EventMetadata
    event_id: UUID = field(default_factory=uuid4)


class StoredEnvelope(NamedTuple):
    """A recorded event's envelope as its store handed it back, not parsed yet.

    Ids are text (SQLite) or ``UUID`` (PostgreSQL); times are integer microseconds since the
    Unix epoch, UTC (SQLite), or aware ``datetime`` (PostgreSQL); ``actor_role`` is the
    ``Role`` value.
    """

    event_id: str | UUID
    source: str
    actor_id: str
    actor_role: str
    correlation_id: str | UUID
    causation_id: str | UUID | None
    occurred_at: int | datetime
    recorded_at: int | datetime


class StoredForm(NamedTuple):
    """An event's data as its store holds it, when that is not what ``RecordedEvent.data``
    hands out: the event was stored under an older schema version and is upcast. What its
    ledger leaf hashes (``casetrail_platform.ledger.canonical``); it travels with the event
    as the CloudEvents extensions ``storedversion`` and ``storeddata``."""

    schema_version: int
    data: bytes
    """The stored bytes exactly: sensitive values sealed as the store sealed them."""


class _Slots:
    """Every field of a ``RecordedEvent``, assignable: records are built as one of these and
    then become a ``RecordedEvent`` (plain stores cost a fifth of ``object.__setattr__``, and
    this runs for every event read or appended)."""

    __slots__ = (
        "_data",
        "_event",
        "_event_id",
        "_metadata",
        "_recorded_at",
        "_registry",
        "_stored",
        "_stored_form",
        "_stored_in_clear",
        "_stored_version",
        "_trace_parent",
        "event_type",
        "position",
        "sequence",
        "stream",
        "subject",
    )

    stream: str
    sequence: int
    """Version of the stream after this event (1 for the first event of a stream)."""
    position: int
    """Global position in the store that recorded it: ordered, gap-free as read."""
    event_type: str
    subject: str
    """What the event is about: the case id (the client id for a client registration)."""
    _event_id: UUID | None
    _recorded_at: datetime | None
    _metadata: EventMetadata | None
    _stored: StoredEnvelope | None
    _event: CaseEvent | None
    _data: bytes | None
    _stored_version: int
    _stored_form: StoredForm | None
    _stored_in_clear: bool | None
    _registry: EventRegistry | None
    _trace_parent: str | None


class RecordedEvent(_Slots):
    """An event as durably recorded: the data plus its place in a store.

    Read from a store, nothing is parsed up front: the envelope's ids, times and metadata
    on first use of ``event_id``, ``recorded_at`` or ``metadata``, the event's data (decoded
    and upcast) on first use of ``event``. ``data`` hands out the stored JSON as it is while
    it is at the current schema version and ``stored_envelope`` the envelope as stored: code
    that only routes or forwards events (the outbox relay, filters on ``event_type``) never
    pays for parsing and formatting again. Instances are immutable.
    """

    __slots__ = ()

    def __new__(
        cls,
        event_id: UUID,
        stream: str,
        sequence: int,
        position: int,
        recorded_at: datetime,
        event: CaseEvent,
        metadata: EventMetadata,
    ) -> RecordedEvent:
        record = _Slots()
        record._event_id = event_id
        record.stream = stream
        record.sequence = sequence
        record.position = position
        record._recorded_at = recorded_at
        record._metadata = metadata
        record._stored = None
        record.event_type = event.event_type
        record.subject = event.subject
        record._event = event
        record._data = None
        record._stored_version = event.schema_version
        record._stored_form = None
        record._stored_in_clear = None
        record._registry = None
        record._trace_parent = None
        record.__class__ = cls
        return record  # type: ignore[return-value]

    @classmethod
    def stored(
        cls,
        *,
        stream: str,
        sequence: int,
        position: int,
        event_type: str,
        subject: str,
        schema_version: int,
        data: bytes,
        registry: EventRegistry,
        envelope: StoredEnvelope,
        trace_parent: str | None = None,
    ) -> RecordedEvent:
        """A record whose envelope is parsed from ``envelope`` and whose event is decoded
        from ``data`` by ``registry``, each when first needed."""
        record = _Slots()
        record._event_id = None
        record.stream = stream
        record.sequence = sequence
        record.position = position
        record._recorded_at = None
        record._metadata = None
        record._stored = envelope
        record.event_type = event_type
        record.subject = subject
        record._event = None
        record._data = data
        record._stored_version = schema_version
        record._stored_form = None
        record._stored_in_clear = None
        record._registry = registry
        record._trace_parent = trace_parent
        record.__class__ = cls
        return record  # type: ignore[return-value]

    @property
    def event_id(self) -> UUID:
        value = self._event_id
        if value is None:
            value = _uuid(self._envelope().event_id)
            object.__setattr__(self, "_event_id", value)
        return value

    @property
    def recorded_at(self) -> datetime:
        value = self._recorded_at
        if value is None:
            value = _moment(self._envelope().recorded_at)
            object.__setattr__(self, "_recorded_at", value)
        return value

    @property
    def metadata(self) -> EventMetadata:
        value = self._metadata
        if value is None:
            stored = self._envelope()
            causation = stored.causation_id
            value = EventMetadata(
                source=stored.source,
                actor=Actor(stored.actor_id, _role(stored.actor_role)),
                occurred_at=_moment(stored.occurred_at),
                correlation_id=_uuid(stored.correlation_id),
                causation_id=None if causation is None else _uuid(causation),
            )
            object.__setattr__(self, "_metadata", value)
        return value

    @property
    def trace_parent(self) -> str | None:
        """The W3C ``traceparent`` of the command that recorded it, when that was traced.

        Kept beside the event, not in it: it is no part of the event's identity, equality or
        hashed history (``casetrail_platform.ledger.canonical``), only a pointer into the operators'
        tracing system, published as the CloudEvents ``traceparent`` extension."""
        return self._trace_parent

    def traced(self, trace_parent: str | None) -> RecordedEvent:
        """This record, carrying ``trace_parent`` (for a decoder building a record it just
        made; a record handed out is never changed)."""
        object.__setattr__(self, "_trace_parent", trace_parent)
        return self

    @property
    def stored_envelope(self) -> StoredEnvelope | None:
        """The envelope as the store handed it back (``None`` for a record built from
        objects), for code that forwards its values as text (``events.cloudevents``)."""
        return self._stored

    @property
    def event(self) -> CaseEvent:
        event = self._event
        if event is None:
            assert self._registry is not None
            assert self._data is not None
            try:
                event = self._registry.decode(
                    self.event_type, self._stored_version, self._data, self._event_id_as_stored()
                )
            except InvalidEventError as error:
                # The store accepted it once: a reader refusing it now is the server's fault,
                # not the caller's input (which InvalidEventError, a refusal, would say).
                raise UnreadableStoredEventError(self.stream, self.sequence, error) from error
            object.__setattr__(self, "_event", event)
        return event

    @property
    def schema_version(self) -> int:
        """The schema version of ``event`` and ``data`` (current: older data is upcast)."""
        if self._event is not None:
            return self._event.schema_version
        assert self._registry is not None
        try:
            return self._registry.model_for(self.event_type).schema_version
        except InvalidEventError as error:
            # A type the store holds that this release's catalog lacks: as for ``event``,
            # the server's data, never a refusal of the caller's input.
            raise UnreadableStoredEventError(self.stream, self.sequence, error) from error

    @property
    def data(self) -> bytes:
        """The event's data as JSON at ``schema_version``, sensitive values sealed as stored
        (``casetrail_platform.keys.fields``; ``event`` holds them opened)."""
        stored = self._data
        if stored is not None and self._stored_version == self.schema_version:
            return stored if type(stored) is bytes else bytes(stored)
        registry = self._registry
        if (
            stored is not None
            and registry is not None
            and (registry.protection is not None or registry.is_sealed(stored))
        ):
            # Upcast: sealed again, never handed out opened. Sealed data or not: data stored
            # in clear under a version before its fields were marked sensitive holds values
            # the current version seals.
            return registry.seal_again(self.event, self.event_id)
        return encode(self.event)

    @property
    def stored_form(self) -> StoredForm | None:
        """The data as the producing store holds it, when that differs from ``data`` (stored
        under an older schema version); ``None`` when ``data`` is what was stored."""
        carried = self._stored_form
        if carried is not None:
            return carried
        stored = self._data
        if stored is None or self._registry is None:
            return None  # built from objects or decoded: nothing older is known
        version = self._stored_version
        if version == self.schema_version:
            return None
        return StoredForm(version, stored if type(stored) is bytes else bytes(stored))

    def keeping_stored_form(self, form: StoredForm | None, *, in_clear: bool) -> RecordedEvent:
        """This record, carrying ``form`` (for a decoder building a record it just made from a
        message that carried it; a record handed out is never changed); ``in_clear``: see
        ``stored_in_clear``."""
        object.__setattr__(self, "_stored_form", form)
        object.__setattr__(self, "_stored_in_clear", in_clear)
        return self

    @property
    def stored_in_clear(self) -> bool:
        """Whether ``stored_form`` holds in clear a value the current schema version seals (it
        was stored before its field was marked sensitive or personal, and history is never
        rewritten): then it never travels in a Kafka header (``events.cloudevents``)."""
        known = self._stored_in_clear
        if known is None:
            form = self.stored_form
            registry = self._registry
            try:
                known = (
                    form is not None
                    and registry is not None
                    and registry.holds_in_clear(
                        self.event_type, form.schema_version, form.data, self._event_id_as_stored()
                    )
                )
            except InvalidEventError as error:
                # As for ``event``: the server's data, never a refusal of the caller's input.
                raise UnreadableStoredEventError(self.stream, self.sequence, error) from error
            object.__setattr__(self, "_stored_in_clear", known)
        return known

    @property
    def sealed(self) -> bool:
        """Whether ``data`` may hold sealed values (it then differs from ``event``'s own JSON;
        free text quoting ``"ct1~`` passes this cheap test too, and holds none)."""
        stored = self._data
        return stored is not None and _SEALED_DATA_MARK in stored

    def _event_id_as_stored(self) -> str | UUID:
        if self._event_id is not None:
            return self._event_id
        return self._envelope().event_id

    def with_data(self, data: bytes) -> RecordedEvent:
        """This record, handing out ``data`` (the event as stored, its sensitive values sealed)
        instead of re-encoding ``event``: for a decoder or a store building a record it just
        made; a record handed out is never changed."""
        object.__setattr__(self, "_data", data)
        return self

    def _envelope(self) -> StoredEnvelope:
        stored = self._stored
        assert stored is not None, "a record built from objects has every field parsed"
        return stored

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"RecordedEvent is immutable (tried to set {name!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordedEvent):
            return NotImplemented
        return (
            self.event_id == other.event_id
            and self.stream == other.stream
            and self.sequence == other.sequence
            and self.position == other.position
            and self.recorded_at == other.recorded_at
            and self.metadata == other.metadata
            and self.event == other.event
        )

    def __hash__(self) -> int:
        return hash(self.event_id)

    def __repr__(self) -> str:
        return (
            f"RecordedEvent(event_id={self.event_id!r}, stream={self.stream!r}, "
            f"sequence={self.sequence}, position={self.position}, type={self.event_type!r})"
        )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch, exact (unlike a float timestamp)."""
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The aware UTC moment ``micros`` microseconds after the Unix epoch."""
    return _EPOCH + timedelta(microseconds=micros)


def _uuid(value: str | UUID) -> UUID:
    return value if isinstance(value, UUID) else UUID(value)


def _moment(value: int | datetime) -> datetime:
    return value if isinstance(value, datetime) else from_micros(value)


@cache
def _role(value: str) -> Role:
    # Role(value) costs ten times a cached look-up.
    return Role(value)
