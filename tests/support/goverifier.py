"""The ledger's independent verifier: ``tests/integration/goverifier/``, a small Go program over
``golang.org/x/mod/sumdb`` and ``transparency-dev/merkle``, built from the Go module proxy once
per version of its sources into ``~/.cache/casetrail/ledger-goverifier/`` (outside the
repository). ``make ledger-verifier`` builds it (``python -m tests.support.goverifier`` prints
the binary's path); tests/integration/test_ledger_independent.py runs it."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "integration" / "goverifier"


class GoMissing(Exception):
    """No Go toolchain here: the verifier cannot be built."""


def build_goverifier() -> Path:
    """The verifier's binary, built once per version of its sources."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((SOURCE / name).read_bytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    binary = cache / "casetrail" / "ledger-goverifier" / digest.hexdigest()[:16] / "goverifier"
    if binary.exists():
        return binary
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if go is None:
        raise GoMissing("Go is not installed: the independent verifier cannot be built")
    binary.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [go, "build", "-mod=readonly", "-o", str(binary), "."],
        cwd=SOURCE,
        check=True,
        env={**os.environ, "GOFLAGS": "-mod=readonly"},
    )
    return binary


def main() -> None:
    try:
        print(build_goverifier())
    except GoMissing as missing:
        raise SystemExit(f"ledger-verifier: {missing}") from None


if __name__ == "__main__":
    main()
