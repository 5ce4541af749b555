"""The public catalog (``events``) is importable alone: nothing in it imports the platform.

Outside subscribers and the generators use the catalog without the store, bus or servers; a
platform import creeping into it (even one inside a function) fails here.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
CATALOG = REPOSITORY / "events"
PLATFORM = "casetrail_platform"

_IMPORT_EVERY_CATALOG_MODULE = """
import importlib, json, pkgutil, sys
import events
names = [m.name for m in pkgutil.walk_packages(events.__path__, "events.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "loaded": sorted(sys.modules)}))
"""


def _is_platform(module: str) -> bool:
    return module == PLATFORM or module.startswith(PLATFORM + ".")


def test_importing_every_catalog_module_loads_no_platform_module() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", _IMPORT_EVERY_CATALOG_MODULE],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert "events.asyncapi" in result["imported"]
    assert "events.catalog.base" in result["imported"]
    assert [name for name in result["loaded"] if _is_platform(name)] == []


def platform_imports() -> set[tuple[str, str]]:
    """(catalog file, platform module) for every import of the platform in the catalog, at
    module level or inside a function or ``if TYPE_CHECKING``."""
    found = set()
    for path in sorted(CATALOG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            found |= {
                (path.relative_to(REPOSITORY).as_posix(), module)
                for module in modules
                if _is_platform(module)
            }
    return found


KNOWN_AT_THE_SPLIT: set[tuple[str, str]] = {
    ("events/registry.py", "casetrail_platform.keys.fields"),
}
"""Deferred or type-only platform imports the catalog had when it was split off (none load
at import time); each is a debt to pay by moving what it needs into the catalog. The set
only shrinks: a new entry fails the test below."""


def test_no_catalog_module_names_the_platform_in_an_import() -> None:
    assert platform_imports() - KNOWN_AT_THE_SPLIT == set()
