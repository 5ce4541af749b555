"""The ordering contract for outside subscribers (``catalog.json``, ``ordering``): the
streams that hold one subject's events only, whose ``sequence`` rises by one per event in
delivery order. The platform's ``SequenceGuard`` (``casetrail_platform.bus.ordering``) holds
its consumers to it.
"""

from __future__ import annotations

ONE_KEY_STREAM_KINDS = ("access", "case", "client")
"""Streams named ``<kind>-<subject>`` with these kinds hold events of that subject only."""
