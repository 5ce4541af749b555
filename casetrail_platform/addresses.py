"""Where a data directory says its services listen: ``addresses.json``, written by the embedded
runner (services/runner.py ``write_addresses``) and read by the CLI and the demo (cli/rpc.py
``load_addresses``). One name for the file, in a module of its own that imports nothing
heavier than pathlib, so that the CLI learns it without importing the runner (grpc, the
stores, the services: slow to import at every command)."""

from __future__ import annotations

from pathlib import Path


def addresses_file(data_dir: Path) -> Path:
    return data_dir / "addresses.json"


MAX_PORT = 65535


def bracketed(host: str) -> str:
    """``host`` as written before ``:port``: an IPv6 address in brackets (``::1`` ->
    ``[::1]``; ``:::0`` named no address a server could bind)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def unbracketed(host: str) -> str:
    """``host`` as a socket binds it: ``[::]`` -> ``::`` (written as in a URL, the brackets
    named no address, and ``[::1]`` was not known as loopback)."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


class BindError(OSError):
    """A server's address cannot be listened on (taken, or not this machine's): the gRPC
    servers' (``grpc_platform.server``) and the development issuer's; the runner ends in one
    line naming it."""


def host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 host bracketed (``[::]:7301``)."""
    return f"{bracketed(host)}:{port}"


def port_problem(address: str, lowest: int = 1) -> str | None:
    """Why the port ``address`` (``host:port``) ends with is no port, or ``None``: one beyond
    65535 wrapped silently (70000 dialled 4464). ``lowest`` 0: a server's "any free port"."""
    _, colon, port = address.rpartition(":")
    if not colon or not port.isascii() or not port.isdigit():
        return None  # no port of its own to check (a name resolver's target, say)
    if not lowest <= int(port) <= MAX_PORT:
        return f"{address}: the port must be from {lowest} to {MAX_PORT}"
    return None
