"""Queries: who reads a case record, and why (need-to-know).

Every read names an ``AccessPurpose``; services check the reader's role, and audit records the
purpose of every disclosure. The gRPC entrypoint builds one from the wire's QueryContext with
``casetrail_platform.grpc_platform.context.query_context_from``.
"""

from __future__ import annotations

from dataclasses import dataclass

from events.catalog.access import AccessPurpose
from events.envelope import Actor


@dataclass(frozen=True, slots=True)
class QueryContext:
    actor: Actor
    purpose: AccessPurpose
