"""Audit writes one kind of event: that someone saw, or was refused, parts of a case record.
It does so through the shared access guard (``casetrail_platform.policy.guard.AccessControl``)."""

from __future__ import annotations

SERVICE = "audit"
SERVICE_SOURCE = f"casetrail/{SERVICE}"
