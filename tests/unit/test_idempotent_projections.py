"""Every projection marked ``idempotent`` is one the README lists with its writes, and no other.

Fed from the bus, such a projection keeps no tracking row, and the projection's advisory lock
is taken with that tracking (``already_applied``): its batches take no lock, so on PostgreSQL
its replicas apply events of one key at once. Whether that is safe depends on each write
(blind, compared and set, or under a row lock), which no type checks: a projection newly
marked ``idempotent`` has to be looked at, and the README says what holds for it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TABLE_HEADER = "| idempotent projection | its writes |"


def _idempotent_in_code() -> set[str]:
    """The ``name`` of every class under services/ and casetrail_platform/ whose body sets
    ``idempotent = True``."""
    found = set()
    for package in ("services", "casetrail_platform"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef) and _sets(node, "idempotent") is True:
                    name = _sets(node, "name")
                    assert isinstance(name, str), f"{path}: {node.name} has no literal name"
                    found.add(name)
    return found


def _sets(node: ast.ClassDef, attribute: str) -> object:
    for statement in node.body:
        if (
            isinstance(statement, ast.Assign)
            and [getattr(t, "id", None) for t in statement.targets] == [attribute]
            and isinstance(statement.value, ast.Constant)
        ):
            return statement.value.value
    return None


def _idempotent_in_readme() -> set[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index(TABLE_HEADER) + 2
    names = set()
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        match = re.match(r"\| \w+ `([\w-]+)` \|", line)
        assert match, f"not a projection row: {line[:80]!r}"
        names.add(match.group(1))
    return names


def test_the_readme_lists_the_writes_of_every_idempotent_projection() -> None:
    in_code = _idempotent_in_code()
    assert {"timeline-index-v2", "staff"} <= in_code, "the scan finds them"
    assert _idempotent_in_readme() == in_code
