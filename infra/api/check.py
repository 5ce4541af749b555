"""The API contract checks of ``make api-check``.

* ``asyncapi validate`` on events/asyncapi.yaml (generated from the event catalog);
* ``buf lint`` (STANDARD rules) on protos/: any finding fails the check;
* ``buf breaking`` of protos/ against the same directory at ``--against`` (default: the
  previous commit), minus the intended breaks listed in protos/accepted-breaks.yaml.

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

REPO = Path(__file__).resolve().parents[2]
PROTOS = "protos"
ASYNCAPI_DOCUMENT = REPO / "events" / "asyncapi.yaml"
ACCEPTED_BREAKS = REPO / PROTOS / "accepted-breaks.yaml"


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


def previous_protos(reference: str, into: Path) -> Path:
    """protos/ as of ``reference``, extracted with ``git archive`` (works in worktrees and
    without buf's own git access)."""
    resolved = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{reference}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if resolved.returncode != 0:
        raise SystemExit(
            f"buf breaking: no commit {reference!r} to compare with (a shallow clone?);"
            " fetch the history or pass --against REF"
        )
    archive = into / "protos.tar"
    with archive.open("wb") as out:
        subprocess.run(
            ["git", "archive", resolved.stdout.strip(), PROTOS], cwd=REPO, stdout=out, check=True
        )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / PROTOS


def accepted_breaks() -> list[dict[str, str]]:
    document = yaml.safe_load(ACCEPTED_BREAKS.read_text(encoding="utf-8")) or {}
    entries: list[dict[str, str]] = document.get("accepted") or []
    for entry in entries:
        missing = {"rule", "path", "message", "reason"} - entry.keys()
        if missing:
            raise SystemExit(f"{ACCEPTED_BREAKS}: entry {entry} lacks {', '.join(sorted(missing))}")
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
        previous = previous_protos(against, Path(scratch))
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
    ]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
