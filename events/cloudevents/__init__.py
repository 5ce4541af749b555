"""CloudEvents 1.0 mapping of recorded case events: JSON format and Kafka binary mode.

Context attributes (every value is a string unless noted):

=================  ==========================================================================
``id``             the event id (UUID)
``source``         ``/casetrail/<service>`` from ``metadata.source`` (a source that is already
                   a URI reference, i.e. contains ``/`` or ``:``, is passed through unchanged:
                   casetrail's services record ``casetrail/<service>``, which is what
                   subscribers receive; ``PUBLISHED_SOURCE``)
``specversion``    ``1.0``
``type``           the stable event type, e.g. ``casetrail.case.opened``
``subject``        the event's subject: the case id (the client id for client events, a
                   ledger's origin for its alarms), at most ``MAX_SUBJECT_CHARS``
``time``           when it occurred (``metadata.occurred_at``), RFC 3339
``datacontenttype`` ``application/json``
``dataschema``     ``https://casetrail.example/schemas/<type>/v<schemaversion>.json``; the path
                   after ``/schemas/`` is the file under ``events/schemas/`` in this repository
``sequence``       version of the stream after this event, 19 digits zero-padded so that string
                   order is event order (the CloudEvents Sequence extension is string-typed)
``stream``         the event-store stream the event belongs to, at most ``MAX_STREAM_CHARS``
``schemaversion``  Integer (a JSON number in the JSON format): version of ``data``'s shape
``actorid``        who did it, at most ``MAX_IDENTIFIER_CHARS``
``actorrole``      in which role (``events.catalog.base.Role``)
``correlationid``  UUID shared by everything caused by one request
``causationid``    UUID of the command that caused it, shared by every event it recorded (a
                   service's own follow-up of an event: that event's id); absent when none
``occurredat``     same instant as ``time``, kept so it is never confused with ``recordedat``
``recordedat``     when the store made it durable, RFC 3339
``sourceposition`` global position in the producing service's store, 19 digits zero-padded
``storedversion``  Integer: the schema version the event is stored under, present only when it
                   is older than ``schemaversion`` (``data`` is then upcast; see below)
``storeddata``     Binary (base64 in both formats): the data exactly as stored, with
                   ``storedversion``; sensitive values in it are sealed as the store sealed them
=================  ==========================================================================

The ``storedversion``/``storeddata`` pair is what the producer's ledger hashed
(``casetrail_platform.ledger.canonical``), so that an event stored under an older schema
version can still be proven: the upcast ``data`` is not what was stored, and sealed values
are sealed again with fresh nonces when data is upcast. Subscribers that do not check proofs
may ignore both. A decoder keeps the pair only after checking that the stored data decodes and
upcasts to ``data`` (values the reader cannot open, sealed in ``data``, are not compared).

There is no ``caseid`` attribute: ``subject`` already carries it.

Kafka binary mode: the record key is the subject (all events of a case stay in one partition,
in order); ``datacontenttype`` travels as the ``content-type`` header, every other attribute
as a ``ce_<name>`` header holding its string form in UTF-8; the value is the data JSON.
The key is not part of the event and is not checked on decode. One exception: an event whose
stored form holds in clear a value the current version seals (stored before its field was
marked; ``RecordedEvent.stored_in_clear``) is sent in structured mode (``content-type``
``application/cloudevents+json``, the value the JSON format with ``storeddata``), keeping the
other ``ce_`` headers for routing: headers are logged, copied and shown by tooling that never
shows values, so no sensitive value travels in one.

Both formats are decoded by the same rules, the envelope schema's: counters are 1 to 19
digits (a JSON number too, in the JSON format) up to ``MAX_COUNTER``; ids are UUIDs written
8-4-4-4-12; times are RFC 3339 with an offset, nothing after it; ``traceparent`` is a W3C
trace context; ``subject``, ``stream``, ``actorid`` and ``source`` hold no control character
and no lone surrogate (``envelope_text_problem``, which the event stores apply too). Data and
``storeddata`` are UTF-8 JSON read by ``events.strict_json`` (a key given twice is refused).

Decoding is strict: a missing or malformed attribute raises ``UndecodableMessageError`` naming
the header/attribute, bad data raises the registry's ``InvalidEventError`` naming the event type
and field, so consumers can park poison messages with a precise reason. Older schema versions
are upcast to the current model on decode.

The mapping is in ``attributes`` (the context: names, ``source``, ``dataschema``, the decoding
error), ``encoding``, ``decoding`` (with ``attribute_reader``) and ``schema`` (the envelope's
JSON Schema); everything public is imported from here.
"""

from __future__ import annotations

from events.cloudevents.attributes import (
    ENVELOPE_SCHEMA_URI,
    JSON_CONTENT_TYPE,
    KAFKA_CONTENT_TYPE_HEADER,
    KAFKA_HEADER_PREFIX,
    MAX_COUNTER,
    MAX_IDENTIFIER_CHARS,
    MAX_STREAM_CHARS,
    MAX_SUBJECT_CHARS,
    ORDER_DIGITS,
    PUBLISHED_SOURCE,
    SCHEMA_BASE_URI,
    SOURCE_PREFIX,
    SPEC_VERSION,
    STORED_DATA_ATTRIBUTE,
    STORED_VERSION_ATTRIBUTE,
    STRUCTURED_CONTENT_TYPE,
    KafkaRecord,
    UndecodableMessageError,
    dataschema_uri,
    envelope_text_problem,
    service_of,
    source_uri,
)
from events.cloudevents.decoding import (
    from_json_lines,
    from_kafka_binary,
    from_structured,
    json_lines,
)
from events.cloudevents.encoding import (
    context_attributes,
    iter_json_lines,
    to_json_lines,
    to_kafka_binary,
    to_structured,
)
from events.cloudevents.schema import envelope_json_schema

__all__ = [
    "ENVELOPE_SCHEMA_URI",
    "JSON_CONTENT_TYPE",
    "KAFKA_CONTENT_TYPE_HEADER",
    "KAFKA_HEADER_PREFIX",
    "MAX_COUNTER",
    "MAX_IDENTIFIER_CHARS",
    "MAX_STREAM_CHARS",
    "MAX_SUBJECT_CHARS",
    "ORDER_DIGITS",
    "PUBLISHED_SOURCE",
    "SCHEMA_BASE_URI",
    "SOURCE_PREFIX",
    "SPEC_VERSION",
    "STORED_DATA_ATTRIBUTE",
    "STORED_VERSION_ATTRIBUTE",
    "STRUCTURED_CONTENT_TYPE",
    "KafkaRecord",
    "UndecodableMessageError",
    "context_attributes",
    "dataschema_uri",
    "envelope_json_schema",
    "envelope_text_problem",
    "from_json_lines",
    "from_kafka_binary",
    "from_structured",
    "iter_json_lines",
    "json_lines",
    "service_of",
    "source_uri",
    "to_json_lines",
    "to_kafka_binary",
    "to_structured",
]
