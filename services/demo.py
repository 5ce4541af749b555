"""The elderly client leaving hospital, walked from intake to closure through the four APIs.

Marco Bellini, 85, lives alone and leaves St Mary's Hospital after a hip fracture. He needs
home care, counseling to adjust to his altered physical state, transport to his appointments,
physical therapy and company. The two weeks of his case are told in a few seconds (each command
states when it happened); the walk ends with planning's case view and audit's trail.

By default the demo talks to the services `make run` started (their addresses are in
var/data/addresses.json; without that file, the runner's fixed ports 7301-7304 on this host),
each person of the story with a token minted by `make run`'s development issuer;
--intake/--coordination/--planning/--audit give addresses instead, and --embedded starts all four
in this process on free ports with a temporary data directory.

The steps live in ``cli.walk`` and return what the services answered, so tests/e2e walk the very
same case through ``walk_case`` and assert on its ``WalkResult``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from casetrail_platform.addresses import addresses_file
from cli.main import SERVICES
from cli.rpc import Connection, TokenSource, UnexpectedSuccess, connect, load_addresses, minted_by
from cli.walk import closing, opening, services
from cli.walk.story import Story
from cli.walk.walk import Walk, WalkResult

__all__ = [
    "PHASES",
    "LocalCasetrail",
    "Story",
    "Walk",
    "WalkResult",
    "embedded_services",
    "main",
    "walk_case",
]

PHASES: tuple[Callable[[Walk], Awaitable[None]], ...] = (
    opening.intake,
    opening.assignment,
    opening.eligibility,
    opening.planning,
    services.referrals,
    services.scheduling,
    services.funding,
    services.monitoring,
    closing.closure,
    closing.review,
)


async def walk_case(
    connection: Connection,
    say: Callable[[str], None] = print,
    *,
    story: Story | None = None,
    patience: float = 30.0,
) -> WalkResult:
    """Walk Marco's case from intake to closure; ``patience`` bounds each wait for the bus."""
    walk = Walk(connection, say, story=story, patience=patience)
    for phase in PHASES:
        await phase(walk)
    return walk.result


@dataclass(frozen=True)
class LocalCasetrail:
    """Services started in this process: where they are, and tokens their issuer signs."""

    addresses: dict[str, str]
    tokens: TokenSource


@asynccontextmanager
async def embedded_services(data_dir: Path) -> AsyncIterator[LocalCasetrail]:
    """All four services in this process on free ports, their SQLite files under ``data_dir``,
    trusting a development issuer started on a free port of 127.0.0.1."""
    from casetrail_platform.identity.development import DevelopmentIssuer
    from casetrail_platform.identity.verifier import TokenVerifier
    from casetrail_platform.infrastructure import Infrastructure
    from services.runner import start_services, stop_services

    issuer = DevelopmentIssuer(data_dir, port=0)
    try:
        verifier = TokenVerifier.for_issuer(issuer.url, issuer.signer.audience)
        infra = Infrastructure.embedded(data_dir, verifier=verifier)
        running = await start_services(infra, SERVICES, "127.0.0.1", dict.fromkeys(SERVICES, 0))
        try:
            addresses = {service.name: f"127.0.0.1:{service.port}" for service in running}
            yield LocalCasetrail(addresses, minted_by(issuer.signer))
        finally:
            await stop_services(running)
    finally:
        issuer.stop()


async def demo(options: argparse.Namespace) -> None:
    if options.embedded:
        with tempfile.TemporaryDirectory(prefix="casetrail-demo-") as directory:
            async with embedded_services(Path(directory)) as local:
                await _walk(local.addresses, local.tokens, options.patience)
        return
    data_dir = Path(options.data_dir)
    given = {name: getattr(options, name) for name in SERVICES if getattr(options, name)}
    if len(given) < len(SERVICES):
        given = _known_addresses(data_dir) | given
    from casetrail_platform.identity.development import DevelopmentSigner

    try:
        signer = DevelopmentSigner.load(data_dir)
    except LookupError as error:
        raise SystemExit(f"demo: {error}") from None
    await _walk(given, minted_by(signer), options.patience)


def _known_addresses(data_dir: Path) -> dict[str, str]:
    """Where `make run` said the services are, or else the runner's fixed ports (the
    distributed runner, one process per service, writes no addresses file)."""
    if addresses_file(data_dir).exists():
        return load_addresses(data_dir)
    from services.runner import DEFAULT_PORTS

    return {name: f"127.0.0.1:{port}" for name, port in DEFAULT_PORTS.items()}


async def _walk(addresses: Mapping[str, str], tokens: TokenSource, patience: float) -> None:
    # The cast's tokens come from the development issuer `make run` started (its signing key
    # is in the data directory): each person of the story calls with their own token.
    from casetrail_platform.identity.tls import ClientTls

    async with connect(addresses, tokens, ClientTls.from_env()) as connection:
        await walk_case(connection, patience=patience)


def main(argv: Sequence[str] | None = None) -> None:
    options = parse(argv)
    # The services' warnings (an embedded start without agency.json, say) stay visible.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(demo(options))
    except (TimeoutError, UnexpectedSuccess) as error:
        sys.exit(f"demo stopped: {error}")
    except ValueError as error:  # PlaintextRefused, or a TLS or plaintext setting named
        sys.exit(f"demo: {error}")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m services.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--embedded", action="store_true", help="start the services in-process")
    parser.add_argument("--data-dir", default=os.environ.get("CASETRAIL_DATA_DIR", "var/data"))
    for name in SERVICES:
        parser.add_argument(f"--{name}", metavar="HOST:PORT", help=f"address of {name}")
    parser.add_argument(
        "--patience", type=float, default=30.0, help="seconds to wait for the bus at each step"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
