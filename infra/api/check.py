"""The API contract checks of ``make api-check``.

* ``asyncapi validate`` on events/asyncapi.yaml (generated from the event catalog);
* ``buf lint`` (STANDARD rules) on protos/: any finding fails the check;
* ``buf breaking`` of protos/ against the same directory at ``--against`` (default: the
  previous commit), minus the intended breaks listed in protos/accepted-breaks.yaml;
* the published event schemas (events/schemas/) against the same directory at ``--against``:
  a published version may only widen (``events.schema_compat``), minus the intended breaks
  listed in events/accepted-breaks.yaml.

Usage: ``python infra/api/check.py --tools DIR [--against REF]`` where DIR
holds node_modules/.bin/{buf,asyncapi} (infra/api/install.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from events.schema_compat import Narrowing, narrowings_between

REPO = Path(__file__).resolve().parents[2]
PROTOS = "protos"
ASYNCAPI_DOCUMENT = REPO / "events" / "asyncapi.yaml"
ACCEPTED_BREAKS = REPO / PROTOS / "accepted-breaks.yaml"
SCHEMAS = "events/schemas"
ACCEPTED_SCHEMA_BREAKS = REPO / "events" / "accepted-breaks.yaml"


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.message}"


def buf_findings(buf: Path, *arguments: str) -> list[Finding]:
    """Run ``buf <arguments> --error-format json``; its findings (it exits 100 when any)."""
    result = subprocess.run(
        [str(buf), *arguments, "--error-format", "json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode not in (0, 100):
        raise SystemExit(f"buf {arguments[0]} failed ({result.returncode}):\n{result.stderr}")
    findings = []
    for line in result.stdout.splitlines():
        if line.strip():
            item: dict[str, Any] = json.loads(line)
            findings.append(
                Finding(item["path"], item.get("start_line", 0), item["type"], item["message"])
            )
    return findings


def previous_tree(reference: str, directory: str, into: Path) -> Path:
    """``directory`` as of ``reference``, extracted with ``git archive`` (works in worktrees
    and without buf's own git access)."""
    resolved = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{reference}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if resolved.returncode != 0:
        raise SystemExit(
            f"{directory}: no commit {reference!r} to compare with (a shallow clone?);"
            " fetch the history or pass --against REF"
        )
    archive = into / "tree.tar"
    with archive.open("wb") as out:
        subprocess.run(
            ["git", "archive", resolved.stdout.strip(), directory],
            cwd=REPO,
            stdout=out,
            check=True,
        )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / directory


def accepted_breaks(
    listing: Path = ACCEPTED_BREAKS, keys: frozenset[str] = frozenset({"path", "message"})
) -> list[dict[str, str]]:
    """The entries of ``listing``, each with ``rule``, ``reason`` and ``keys``."""
    document = yaml.safe_load(listing.read_text(encoding="utf-8")) or {}
    entries: list[dict[str, str]] = document.get("accepted") or []
    for entry in entries:
        missing = {"rule", "reason", *keys} - entry.keys()
        if missing:
            raise SystemExit(f"{listing}: entry {entry} lacks {', '.join(sorted(missing))}")
    return entries


def is_accepted(finding: Finding, entries: list[dict[str, str]]) -> bool:
    return any(
        entry["rule"] == finding.rule
        and entry["path"] == finding.path
        and entry["message"].strip() == finding.message.strip()
        for entry in entries
    )


def check_asyncapi(tools: Path) -> bool:
    env = {**os.environ, "ASYNCAPI_METRICS": "false"}
    result = subprocess.run(
        [str(tools / "asyncapi"), "validate", str(ASYNCAPI_DOCUMENT), "--fail-severity", "error"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        print(f"asyncapi validate: FAILED\n{output}")
        return False
    print(f"asyncapi validate: {ASYNCAPI_DOCUMENT.relative_to(REPO)} is valid")
    return True


def check_lint(buf: Path) -> bool:
    findings = buf_findings(buf, "lint", PROTOS)
    if not findings:
        print("buf lint (STANDARD): clean")
        return True
    print(f"buf lint (STANDARD): {len(findings)} findings, FAILED")
    for finding in findings:
        print(f"  {finding}")
    return False


def check_breaking(buf: Path, against: str) -> bool:
    with tempfile.TemporaryDirectory(prefix="casetrail-buf-") as scratch:
        previous = previous_tree(against, PROTOS, Path(scratch))
        findings = buf_findings(buf, "breaking", PROTOS, "--against", str(previous))
    entries = accepted_breaks()
    unaccepted = [finding for finding in findings if not is_accepted(finding, entries)]
    for finding in findings:
        mark = "accepted" if finding not in unaccepted else "BREAKING"
        print(f"  {mark}: {finding}")
    if unaccepted:
        print(
            f"buf breaking against {against}: {len(unaccepted)} unintended breaking changes;"
            f" make them compatible, or list them in {ACCEPTED_BREAKS.relative_to(REPO)}"
        )
        return False
    print(f"buf breaking against {against}: no unintended breaking change")
    return True


def is_accepted_narrowing(narrowing: Narrowing, entries: list[dict[str, str]]) -> bool:
    return any(
        entry["rule"] == narrowing.rule
        and entry["file"] == narrowing.file
        and entry["path"] == narrowing.path
        for entry in entries
    )


def check_schemas(against: str) -> bool:
    with tempfile.TemporaryDirectory(prefix="casetrail-schemas-") as scratch:
        previous = previous_tree(against, SCHEMAS, Path(scratch))
        found = narrowings_between(previous, REPO / SCHEMAS)
    entries = accepted_breaks(ACCEPTED_SCHEMA_BREAKS, frozenset({"file", "path"}))
    unaccepted = [item for item in found if not is_accepted_narrowing(item, entries)]
    for item in found:
        mark = "accepted" if item not in unaccepted else "BREAKING"
        print(f"  {mark}: {SCHEMAS}/{item}")
    if unaccepted:
        print(
            f"event schemas against {against}: {len(unaccepted)} published schemas narrowed;"
            " publish a new schema_version instead, or list them in"
            f" {ACCEPTED_SCHEMA_BREAKS.relative_to(REPO)}"
        )
        return False
    print(f"event schemas against {against}: every published version only widened")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infra/api/check.py", description=__doc__)
    parser.add_argument("--tools", type=Path, required=True, help="node_modules/.bin")
    parser.add_argument("--against", default="HEAD~1")
    arguments = parser.parse_args(argv)
    buf = arguments.tools / "buf"
    results = [
        check_asyncapi(arguments.tools),
        check_lint(buf),
        check_breaking(buf, arguments.against),
        check_schemas(arguments.against),
    ]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
