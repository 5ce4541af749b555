"""The refusal reasons the code can answer (``google.rpc.ErrorInfo.reason``), read from its
source: the values that reach a reason, not every upper-case string.

A reason is given where a refusal is made: the first argument (or ``rule=``) of
``RuleBroken``, ``InvalidCredential`` or a ``RuleBroken`` subclass's ``super().__init__``,
the ``reason=`` of an ``ErrorInfo``, and the ``reason`` or ``RULE`` of an exception class.
Each is followed to its values: a literal; a constant of a module or a class (``errors.X``,
``Class.RULE``, ``self.RULE``); ``getattr``'s default; ``.upper()`` and ``.replace(...)`` of
one; a parameter of the function the refusal is made in, through the arguments its callers
pass; a loop variable over a module's table of tuples. What cannot be followed is reported, so
a new way of giving a reason is read, not missed.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

REASON_ARGUMENT = {"RuleBroken": 0, "InvalidCredential": 0, "Refused": 2}
"""Refusals made by a call, and which positional argument is their reason (``Refused``:
caseload's HTTP refusals, status, message, reason)."""
REASON_KEYWORDS = frozenset({"rule", "reason", "code"})
REASON_ATTRIBUTES = frozenset({"reason", "RULE"})
PASSED_ON = frozenset({"rule", "reason"})
"""An exception's own ``.rule`` or ``.reason`` passed on (by the mapping to a status, say): its
values are read where the exception is made."""
EXCEPTION_ROOTS = frozenset({"Exception", "ValueError", "LookupError", "RuntimeError"})

Node = TypeVar("Node", bound=ast.AST)


@dataclass
class _Module:
    path: Path
    tree: ast.Module
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)


@dataclass
class Reasons:
    found: set[str] = field(default_factory=set)
    unfollowed: list[str] = field(default_factory=list)
    """``path:line`` of each reason given by an expression that could not be followed."""


class _Source:
    def __init__(self, paths: list[Path], root: Path) -> None:
        self.root = root
        self.modules = [self._parse(path) for path in paths]
        self.constants: dict[str, set[str]] = defaultdict(set)
        self.tables: dict[str, list[tuple[ast.expr, ...]]] = {}
        self.bases: dict[str, set[str]] = defaultdict(set)
        self.functions: dict[str, list[ast.FunctionDef | ast.AsyncFunctionDef]] = defaultdict(list)
        self.calls: dict[str, list[ast.Call]] = defaultdict(list)
        for module in self.modules:
            self._index(module)

    @staticmethod
    def _parse(path: Path) -> _Module:
        module = _Module(path, ast.parse(path.read_text(encoding="utf-8")))
        for node in ast.walk(module.tree):
            for child in ast.iter_child_nodes(node):
                module.parents[child] = node
        return module

    def _index(self, module: _Module) -> None:
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ClassDef):
                self.bases[node.name] |= {_name(base) for base in node.bases}
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.functions[node.name].append(node)
            elif isinstance(node, ast.Call):
                self.calls[_name(node.func)].append(node)
            target, value = _assignment(node)
            if target is None or value is None:
                continue
            owner = module.parents.get(node)
            if isinstance(owner, ast.ClassDef):
                target = f"{owner.name}.{target}"
            elif not isinstance(owner, ast.Module):
                continue
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                self.constants[target].add(value.value)
            elif isinstance(value, ast.Tuple | ast.List):
                rows = [row.elts for row in value.elts if isinstance(row, ast.Tuple)]
                self.tables[target] = [tuple(row) for row in rows]

    def derives_from(
        self, name: str, roots: frozenset[str], seen: frozenset[str] = frozenset()
    ) -> bool:
        if name in roots:
            return True
        return any(
            self.derives_from(base, roots, seen | {name})
            for base in self.bases.get(name, ())
            if base not in seen
        )


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _assignment(node: ast.AST) -> tuple[str | None, ast.expr | None]:
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target = node.targets[0]
        return (target.id if isinstance(target, ast.Name) else None), node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id, node.value
    return None, None


def refusal_reasons(paths: list[Path], root: Path) -> Reasons:
    source = _Source(paths, root)
    reasons = Reasons()
    for module in source.modules:
        for expression in _reason_sites(source, module):
            values = _follow(source, module, expression, depth=3)
            if values is None:
                where = module.path.relative_to(root)
                reasons.unfollowed.append(f"{where}:{expression.lineno}")
            else:
                reasons.found |= values
    return reasons


def _reason_sites(source: _Source, module: _Module) -> Iterator[ast.expr]:
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Call):
            called = _name(node.func)
            index = (
                0 if _super_of_rule_broken(source, module, node) else REASON_ARGUMENT.get(called)
            )
            if index is not None:
                if len(node.args) > index and not isinstance(node.args[index], ast.Starred):
                    yield node.args[index]
                yield from (k.value for k in node.keywords if k.arg in REASON_KEYWORDS)
            elif called == "ErrorInfo":
                yield from (k.value for k in node.keywords if k.arg == "reason")
        elif isinstance(node, ast.ClassDef) and source.derives_from(node.name, EXCEPTION_ROOTS):
            for statement in node.body:
                target, value = _assignment(statement)
                if target in REASON_ATTRIBUTES and value is not None:
                    yield value


def _super_of_rule_broken(source: _Source, module: _Module, call: ast.Call) -> bool:
    func = call.func
    if not (
        isinstance(func, ast.Attribute)
        and func.attr == "__init__"
        and isinstance(func.value, ast.Call)
        and _name(func.value.func) == "super"
    ):
        return False
    owner = _enclosing(module, call, ast.ClassDef)
    return (
        owner is not None
        and owner.name != "RuleBroken"
        and source.derives_from(owner.name, frozenset({"RuleBroken"}))
    )


def _enclosing(module: _Module, node: ast.AST, kind: type[Node]) -> Node | None:
    parent = module.parents.get(node)
    while parent is not None:
        if isinstance(parent, kind):
            return parent
        parent = module.parents.get(parent)
    return None


def _follow(source: _Source, module: _Module, node: ast.expr, depth: int) -> set[str] | None:
    """The values ``node`` may hold, or None when it cannot be followed."""
    if depth < 0:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Call):
        return _follow_call(source, module, node, depth)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        owner = node.value.id
        if owner == "self":
            cls = _enclosing(module, node, ast.ClassDef)
            owner = cls.name if cls is not None else owner
        found = source.constants.get(f"{owner}.{node.attr}") or source.constants.get(node.attr)
        if not found and node.attr in PASSED_ON:
            return set()
        return set(found) if found else None
    if isinstance(node, ast.Name):
        function = _enclosing(module, node, ast.FunctionDef) or _enclosing(
            module, node, ast.AsyncFunctionDef
        )
        if function is not None:
            followed = _follow_local(source, module, function, node.id, depth)
            if followed is not None:
                return followed
        found = source.constants.get(node.id)
        return set(found) if found else None
    return None


def _follow_call(source: _Source, module: _Module, call: ast.Call, depth: int) -> set[str] | None:
    func = call.func
    if isinstance(func, ast.Name) and func.id == "getattr" and len(call.args) == 3:
        return _follow(source, module, call.args[2], depth)
    if not isinstance(func, ast.Attribute):
        return None
    values = _follow(source, module, func.value, depth)
    if values is None:
        return None
    if func.attr == "upper" and not call.args:
        return {value.upper() for value in values}
    if func.attr == "replace" and len(call.args) == 2:
        old, new = (_follow(source, module, arg, depth) for arg in call.args)
        if old is not None and new is not None and len(old) == len(new) == 1:
            return {value.replace(next(iter(old)), next(iter(new))) for value in values}
    return None


def _follow_local(
    source: _Source,
    module: _Module,
    function: ast.FunctionDef | ast.AsyncFunctionDef,
    name: str,
    depth: int,
) -> set[str] | None:
    """A parameter (through its callers' arguments) or a loop variable over a table."""
    parameters = [argument.arg for argument in function.args.args]
    if name in parameters:
        index = parameters.index(name)
        found: set[str] = set()
        for call in source.calls.get(function.name, []):
            given = [k.value for k in call.keywords if k.arg == name]
            if not given and index < len(call.args):
                given = [call.args[index]]
            for argument in given:
                # The caller's module holds the call: follow it there.
                caller = next(m for m in source.modules if call in m.parents)
                values = _follow(source, caller, argument, depth - 1)
                if values is None:
                    return None
                found |= values
        return found or None
    for loop in ast.walk(function):
        if (
            isinstance(loop, ast.For)
            and isinstance(loop.target, ast.Tuple)
            and isinstance(loop.iter, ast.Name)
            and loop.iter.id in source.tables
        ):
            targets = [_name(element) for element in loop.target.elts]
            if name in targets:
                index = targets.index(name)
                rows = source.tables[loop.iter.id]
                cells = [_follow(source, module, row[index], depth) for row in rows]
                if not cells or any(cell is None for cell in cells):
                    return None
                return set().union(*(cell for cell in cells if cell is not None))
    return None
