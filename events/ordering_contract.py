"""The ordering contract for outside subscribers (``catalog.json``, ``ordering``): the
streams that hold one subject's events only, whose ``sequence`` rises by one per event in
delivery order. The platform's ``SequenceGuard`` (``casetrail_platform.bus.ordering``) holds
its consumers to it.
"""

from __future__ import annotations

ONE_KEY_STREAM_KINDS = ("access", "case", "client")
"""Streams named ``<kind>-<subject>`` with these kinds hold events of that subject only."""

STREAM_KIND_EVENT_TYPES = {
    "access": frozenset({"casetrail.record.accessed", "casetrail.record.access_denied"}),
}
"""Stream kinds whose streams hold these event types only: ``access-<case>`` holds the case's
access records and nothing else, so a consumer that wants neither type has nothing of such a
stream to keep in order (the platform's consumers pass its records by untracked)."""
