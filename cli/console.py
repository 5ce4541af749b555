"""`casetrail console`: serve the audit console in the browser, talking to a running audit.

Sign-in checks tokens of ``CASETRAIL_OIDC_ISSUER`` when it is set; otherwise of the development
issuer `make run` started with the data directory (whose key also lets the sign-in page mint a
development token: DEVELOPMENT ONLY).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from casetrail_platform.identity.development import DevelopmentSigner
from casetrail_platform.identity.settings import IssuerSettings
from casetrail_platform.identity.tls import ClientTls
from casetrail_platform.identity.verifier import TokenVerifier
from cli.rpc import load_addresses
from services.console.server import start_console
from services.console.settings import ConsoleSettings

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def run(options: argparse.Namespace) -> int:
    if IssuerSettings.from_env() is None and options.host not in LOOPBACK:
        # The development sign-in mints a token for any name typed in: anyone who can reach
        # the page could then read every case as an auditor.
        print(
            f"console: refusing to serve the development sign-in on {options.host}: it is"
            " served on loopback only (127.0.0.1, ::1, localhost); set CASETRAIL_OIDC_ISSUER"
            " (and _AUDIENCE) to sign in with a real issuer elsewhere",
            file=sys.stderr,
        )
        return 2
    try:
        settings = _settings(options)
    except (LookupError, ValueError) as error:
        print(f"console: {error}", file=sys.stderr)
        return 2
    asyncio.run(_serve(settings, options.host, options.port))
    return 0


def _settings(options: argparse.Namespace) -> ConsoleSettings:
    data_dir = Path(options.data_dir)
    address = options.audit or load_addresses(data_dir).get("audit")
    if not address:
        raise LookupError("no address for audit: pass --audit HOST:PORT")
    issuer = IssuerSettings.from_env()
    signer: DevelopmentSigner | None = None
    if issuer is None:
        signer = DevelopmentSigner.load(data_dir)
        verifier = TokenVerifier.for_issuer(signer.issuer, signer.audience)
    else:
        verifier = issuer.verifier()
    return ConsoleSettings(
        audit_address=address,
        verifier=verifier,
        development_signer=signer,
        tls=ClientTls.from_env(),
        secure_cookies=options.secure_cookies,
    )


async def _serve(settings: ConsoleSettings, host: str, port: int) -> None:
    console = await start_console(settings, host, port)
    print(f"casetrail console on {console.url} (audit at {settings.audit_address})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await console.stop()
