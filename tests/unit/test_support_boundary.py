"""A test module (``tests/**/test_*.py``) is never imported by anything else: what a test
and a benchmark share lives in ``tests/support/``, the one place for tooling used by the
tests and by ``bench/`` (its ``__init__`` says so). A benchmark takes nothing else from
``tests``; a support module, conftest or helper imports no test module. The checks read the
imports (module level or inside a function), so they hold without running anything."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
SUPPORT = "tests.support"


def _module_of(path: Path) -> str:
    parts = path.relative_to(REPOSITORY).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_test_module(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "tests" and parts[-1].startswith("test_")


def imported_modules(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, ``from tests.unit import test_x`` as ``tests.unit.test_x``
    and relative imports resolved."""
    package = _module_of(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def _python_files(folder: str) -> list[Path]:
    return sorted((REPOSITORY / folder).rglob("*.py"))


def _named(path: Path) -> str:
    return path.relative_to(REPOSITORY).as_posix()


def test_a_benchmark_takes_from_the_tests_only_their_support_package() -> None:
    found = [
        f"{_named(path)}: {module}"
        for path in _python_files("bench")
        for module in imported_modules(path)
        if (module == "tests" or module.startswith("tests."))
        and not (module == SUPPORT or module.startswith(SUPPORT + "."))
    ]
    assert found == []


def test_no_module_but_a_test_module_imports_a_test_module() -> None:
    """Support modules, conftests, helpers and the product's packages alike."""
    found = [
        f"{_named(path)}: {module}"
        for folder in ("bench", "tests", "events", "casetrail_platform", "services", "cli", "infra")
        for path in _python_files(folder)
        if not path.name.startswith("test_")
        for module in imported_modules(path)
        if _is_test_module(module)
    ]
    assert found == []


def imports_between_test_modules() -> set[tuple[str, str]]:
    """(test file, test module) for every test module a test module imports."""
    return {
        (_named(path), module)
        for path in _python_files("tests")
        if path.name.startswith("test_")
        for module in imported_modules(path)
        if _is_test_module(module)
    }


def test_no_test_module_imports_another() -> None:
    """What two test modules share lives in a support module or a conftest: the imports between
    test modules there were when the rule came (12-05) have all moved out, and none comes back."""
    assert imports_between_test_modules() == set()
