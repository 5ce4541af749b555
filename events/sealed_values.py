"""Sealed sensitive values as subscribers see them on the bus and in exports: the
``ct1~`` prefix, the erasure markers and the canonical JSON of sealed data. The
platform seals and opens them (``casetrail_platform.keys.fields``).
"""

from __future__ import annotations

import json
from typing import Any

CIPHERTEXT_PREFIX = "ct1~"
SEALED_DATA_MARK = b'"' + CIPHERTEXT_PREFIX.encode()
"""Present in the JSON data of every event with a sealed value (cheap test before parsing)."""

ERASED_TEXT = "[erased]"
ERASED_CODE = "erased"
ERASED_FORMS: tuple[Any, ...] = (ERASED_TEXT, ERASED_CODE, None, [])
"""Every form a sealed value reads as without its key: text and codes marked, and personal
data sealed whole read empty (a list) or absent (a date, an object)."""


_CANONICAL_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def canonical_json(document: Any) -> bytes:
    """Compact JSON with sorted keys: the stored form of data with sealed values."""
    # One encoder for all calls: ``json.dumps`` with options builds a new one per call.
    return _CANONICAL_ENCODER.encode(document).encode()
