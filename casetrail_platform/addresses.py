"""Where a data directory says its services listen: ``addresses.json``, written by the embedded
runner (services/runner.py ``write_addresses``) and read by the CLI and the demo (cli/rpc.py
``load_addresses``). One name for the file, in a module of its own that imports nothing
heavier than pathlib, so that the CLI learns it without importing the runner (grpc, the
stores, the services: slow to import at every command)."""

from __future__ import annotations

from pathlib import Path


def addresses_file(data_dir: Path) -> Path:
    return data_dir / "addresses.json"
