"""pydantic's complaints about a command's data, as a caller should read them.

Every service turns a catalog model's ``ValidationError`` into field violations; they all read
the details through ``reported`` first, so the same request gets the same violations anywhere.
"""

from __future__ import annotations

import re

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from events.catalog.values import ERASURE_MARKERS

_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'")


def reported(error: ValidationError) -> list[ErrorDetails]:
    """``error``'s details without the noise: a list's ``too_short`` when items of that list
    were refused (pydantic counts only the valid items, so one bad item of one also reads "at
    least 1 item ... not 0"), and the erasure markers left out of the values a code may take
    (the enum lists them, the store refuses them: ``casetrail_platform.keys.fields``)."""
    details = error.errors(include_url=False)
    refused_items = {detail["loc"] for detail in details if len(detail["loc"]) > 1}
    kept: list[ErrorDetails] = []
    for detail in details:
        location = detail["loc"]
        if detail["type"] == "too_short" and any(
            item[: len(location)] == location and len(item) > len(location)
            for item in refused_items
        ):
            continue
        if detail["type"] in ("enum", "literal_error"):
            detail = _without_markers(detail)
        kept.append(detail)
    return kept


def _without_markers(detail: ErrorDetails) -> ErrorDetails:
    expected = str((detail.get("ctx") or {}).get("expected", ""))
    allowed = [value for value in _QUOTED.findall(expected) if value not in ERASURE_MARKERS]
    if not allowed:
        return detail
    quoted = [f"'{value}'" for value in allowed]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return {**detail, "msg": f"Input should be {listed}"}
