"""The other cases and other clients a client's own events name, which each of the client's
cases shows (``adapters.timeline.ClientTrailProjection``): the erasure names every case of the
client, the registration the clients the registrar compared the person to. A view of one case
names them only to a reader the policy lets see them (``app.queries.NamedOthers``); these are
the fields, the ids they name, and the events shown with some withheld.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from uuid import UUID

from events.catalog.clients import ClientRegistered
from events.catalog.erasure import ClientErased
from events.envelope import RecordedEvent
from events.sealed_values import canonical_json

OTHER_CASES_PATH = f"{ClientErased.event_type}.case_ids"
"""The client's other cases, named by their erasure."""
LOOKALIKES_PATH = f"{ClientRegistered.event_type}.confirmed_not_duplicate_of"
"""Other clients who looked like the same person (same name and date of birth, or an
identifier), whom the registrar confirmed the client is not."""

_FIELDS = {
    path.rsplit(".", 1)[0]: path.rsplit(".", 1)[1] for path in (OTHER_CASES_PATH, LOOKALIKES_PATH)
}
"""The naming field of each event type that has one."""
NAMING_TYPES = frozenset(_FIELDS)
"""The event types that name other cases or clients."""


def named(entries: Iterable[RecordedEvent], path: str) -> list[str]:
    """The ids the field at ``path`` names in ``entries``, each once, in the order met."""
    event_type, field = path.rsplit(".", 1)
    return list(
        dict.fromkeys(
            named_id
            for recorded in entries
            if recorded.event_type == event_type
            for named_id in getattr(recorded.event, field)
        )
    )


def shown_without(
    entries: Iterable[RecordedEvent], withheld: Mapping[str, frozenset[str]]
) -> tuple[list[RecordedEvent], dict[UUID, str]]:
    """``entries`` as shown with the ids ``withheld`` (by the path of the field naming them)
    left out, and the path withheld from each event shown so."""
    shown: list[RecordedEvent] = []
    redacted: dict[UUID, str] = {}
    for recorded in entries:
        field = _FIELDS.get(recorded.event_type)
        path = f"{recorded.event_type}.{field}"
        if field is not None and (hidden := withheld.get(path)):
            ids: tuple[str, ...] = getattr(recorded.event, field)
            kept = tuple(named_id for named_id in ids if named_id not in hidden)
            if kept != ids:
                recorded = _showing(recorded, field, kept)
                redacted[recorded.event_id] = path
        shown.append(recorded)
    return shown, redacted


def _showing(recorded: RecordedEvent, field: str, ids: tuple[str, ...]) -> RecordedEvent:
    """``recorded`` naming ``ids`` in ``field`` (a list of ids, never sealed). Sealed data keeps
    its other values sealed as stored: the event's own JSON would hand them out opened (a
    registration's date of birth, identifiers and contact)."""
    shown = RecordedEvent(
        recorded.event_id,
        recorded.stream,
        recorded.sequence,
        recorded.position,
        recorded.recorded_at,
        recorded.event.updated(**{field: ids}),
        recorded.metadata,
    )
    if not recorded.sealed:
        return shown
    data = json.loads(recorded.data)
    data[field] = list(ids)
    # The canonical JSON, as sealed data is stored and as a reader of the line decodes it.
    return shown.with_data(canonical_json(data))
