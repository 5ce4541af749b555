"""The small files of the embedded default's data directory (the services' addresses, the
development issuer's key and address): written whole onto the file itself, never through a
link planted at its name, and read within a bound."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from casetrail_platform.addresses import addresses_file
from casetrail_platform.identity.development import (
    INFO_FILE,
    KEY_FILE,
    DevelopmentIssuer,
    DevelopmentSigner,
    identity_dir,
)
from casetrail_platform.identity.tokens import SigningKey
from cli.rpc import MAX_ADDRESSES_BYTES, load_addresses
from services import runner


def planted_link(at: Path, tmp_path: Path) -> Path:
    """A symbolic link at ``at`` to a file of someone else's, which must stay as it was."""
    victim = tmp_path / "victim.txt"
    victim.write_text("not casetrail's\n")
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(victim)
    return victim


def test_the_addresses_are_written_onto_the_file_not_through_a_link(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    victim = planted_link(addresses_file(data_dir), tmp_path)
    runner.write_addresses(data_dir, {"intake": "127.0.0.1:7301"})
    written = addresses_file(data_dir)
    assert not written.is_symlink()
    assert victim.read_text() == "not casetrail's\n"
    assert load_addresses(data_dir) == {"intake": "127.0.0.1:7301"}
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert [p.name for p in data_dir.iterdir()] == ["addresses.json"]  # no temporary left


def test_the_cli_finds_the_addresses_file_without_importing_the_runner() -> None:
    """One name for the file (casetrail_platform/addresses.py), which the CLI reads without
    the runner's imports (grpc servers, the stores, the services) at every command."""
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, cli.rpc; print('services.runner' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert found.stdout.strip() == "False"


def test_an_addresses_file_past_its_bound_is_refused_unread(tmp_path: Path) -> None:
    many = {f"service-{n}": "127.0.0.1:7301" for n in range(MAX_ADDRESSES_BYTES // 20)}
    addresses_file(tmp_path).write_text(json.dumps(many))
    with pytest.raises(SystemExit) as refused:
        load_addresses(tmp_path)
    assert "cannot read the services' addresses: larger than 65,536 bytes" in str(refused.value)


def test_the_issuers_address_is_written_onto_the_file_not_through_a_link(
    tmp_path: Path,
) -> None:
    victim = planted_link(identity_dir(tmp_path) / INFO_FILE, tmp_path)
    issuer = DevelopmentIssuer(tmp_path, port=0)
    try:
        info = identity_dir(tmp_path) / INFO_FILE
        assert not info.is_symlink()
        assert victim.read_text() == "not casetrail's\n"
        assert DevelopmentSigner.load(tmp_path).issuer == issuer.url
    finally:
        issuer.stop()


def test_an_issuer_file_past_its_bound_is_refused_unread(tmp_path: Path) -> None:
    issuer = DevelopmentIssuer(tmp_path, port=0)
    issuer.stop()
    info = identity_dir(tmp_path) / INFO_FILE
    info.write_text(json.dumps({"issuer": issuer.url, "padding": "x" * (64 * 1024)}))
    with pytest.raises(ValueError, match="larger than"):
        DevelopmentSigner.load(tmp_path)


def test_a_key_cut_short_is_never_left_for_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start that dies writing the new key leaves no key: the next one makes a key (before,
    it found an empty file and every later start refused it)."""

    def dies(_key: SigningKey) -> bytes:
        raise RuntimeError("killed while writing the key")

    with monkeypatch.context() as patched:
        patched.setattr(SigningKey, "pem", dies)
        with pytest.raises(RuntimeError):
            DevelopmentIssuer(tmp_path, port=0)
    assert not (identity_dir(tmp_path) / KEY_FILE).exists()
    issuer = DevelopmentIssuer(tmp_path, port=0)
    try:
        assert DevelopmentSigner.load(tmp_path).key.public_jwk() == issuer.signer.key.public_jwk()
    finally:
        issuer.stop()
