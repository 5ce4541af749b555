"""Where the development issuer may run (review of identity, h-authrev): never beside the
distributed backend, never on an address other machines reach, its key and folder owner-only."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from casetrail_platform.identity.development import KEY_FILE, DevelopmentIssuer, identity_dir
from casetrail_platform.identity.issuer_http import IssuerHttpServer
from services import runner


async def test_the_distributed_backend_never_starts_a_development_issuer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CASETRAIL_OIDC_ISSUER", raising=False)
    options = runner.parse(["--backend", "distributed", "--any-port", "--data-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="CASETRAIL_OIDC_ISSUER"):
        await runner.serve(options, tmp_path)
    assert not identity_dir(tmp_path).exists()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", ""])
def test_a_local_issuer_serves_loopback_only(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        IssuerHttpServer(list, host)


def test_the_development_issuer_keeps_its_key_and_folder_owner_only(tmp_path: Path) -> None:
    issuer = DevelopmentIssuer(tmp_path, port=0)
    try:
        assert issuer.url.startswith("http://127.0.0.1:")
        folder = identity_dir(tmp_path)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE((folder / KEY_FILE).stat().st_mode) == 0o600
    finally:
        issuer.stop()
