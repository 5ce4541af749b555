"""What a request asks for, as a digest: how a reused idempotency key is told from a retry.

A retry sends the same request again; a key reused for another request sends something else.
The fingerprint covers the request's type and every field except its ``context`` (who acts,
the key itself, correlation id, occurred-at and expected version are how the command is sent,
not what it asks for, and a client may set them afresh on every attempt). It is a SHA-256 of
the request's deterministic protobuf encoding, so field order and unset defaults do not matter.

Servicer methods are wrapped by ``casetrail_platform.grpc_platform.server.refusals_as_status``,
which notes the request being served here; ``casetrail_platform.grpc_platform.context`` puts the
fingerprint of that request into the ``CommandContext`` it reads, so every command entrypoint gets
it without passing the request along by hand.
"""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from google.protobuf.message import Message

_CONTEXT_FIELD = "context"

_serving: contextvars.ContextVar[Message | None] = contextvars.ContextVar(
    "casetrail_request_being_served", default=None
)


def fingerprint_of(request: Message) -> str:
    """The request's fingerprint: hex SHA-256 of its type and its fields but ``context``."""
    body = request
    if _CONTEXT_FIELD in request.DESCRIPTOR.fields_by_name and request.HasField(_CONTEXT_FIELD):
        body = type(request)()
        body.CopyFrom(request)
        body.ClearField(_CONTEXT_FIELD)
    digest = hashlib.sha256(request.DESCRIPTOR.full_name.encode())
    digest.update(b"\x00")
    digest.update(body.SerializeToString(deterministic=True))
    return digest.hexdigest()


@contextmanager
def serving(request: Message) -> Iterator[None]:
    """Note ``request`` as the one this task is answering, for ``current_fingerprint``."""
    token = _serving.set(request)
    try:
        yield
    finally:
        _serving.reset(token)


def current_fingerprint() -> str:
    """The fingerprint of the request being served, or "" outside a servicer method."""
    request = _serving.get()
    return "" if request is None else fingerprint_of(request)
