"""JSON as casetrail reads it from outside (Kafka records, CloudEvents documents, export files):
a key given twice, nesting too deep and numbers too long are refused with one ``ValueError``."""

from __future__ import annotations

import json
from typing import Any


class _DuplicateKey(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _DuplicateKey(f"key {key[:64]!r} appears twice")
        document[key] = value
    return document


def strict_json(text: str) -> Any:
    """``text`` decoded, refusing an object with a key twice: ``json`` keeps the last value
    where other readers keep the first, so the event checked here would not be the one they
    read. Raises ``ValueError`` naming the problem (nesting too deep and numbers too long too:
    ``json`` raises ``RecursionError`` and a plain ``ValueError`` for those).

    Text, not bytes: ``json.loads`` of bytes guesses UTF-16 and UTF-32 as well, which a check
    of the bytes for a mark (``events.sealed_values.SEALED_DATA_MARK``) cannot see into."""
    try:
        return json.loads(text, object_pairs_hook=_object)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg})") from None
    except _DuplicateKey as error:
        raise ValueError(f"not valid JSON ({error})") from None
    except (ValueError, RecursionError) as error:
        problem = "nested too deep" if isinstance(error, RecursionError) else str(error)
        raise ValueError(f"not valid JSON ({problem.split(';')[0]})") from None
