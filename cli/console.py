"""`casetrail console`: serve the audit console in the browser, talking to a running audit.

Sign-in checks tokens of ``CASETRAIL_OIDC_ISSUER`` when it is set; otherwise of the development
issuer `make run` started with the data directory (whose key also lets the sign-in page mint a
development token: DEVELOPMENT ONLY). Served over HTTPS with ``CASETRAIL_TLS_CERT``/``_KEY``
(the services' certificate settings); without them on loopback only, unless
``CASETRAIL_CONSOLE_ALLOW_PLAINTEXT=1`` (HTTPS served by a proxy in front). Audit is dialled
over TLS with ``CASETRAIL_TLS_CA``; without it only on loopback, unless
``CASETRAIL_GRPC_ALLOW_PLAINTEXT=1`` (a mesh terminates TLS): every auditor's bearer token
goes to audit. Both refusals exit 2 before anything is served.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from casetrail_platform.addresses import addresses_file, host_port, port_problem
from casetrail_platform.grpc_platform.server import allow_plaintext
from casetrail_platform.identity.development import DevelopmentSigner
from casetrail_platform.identity.settings import IssuerSettings
from casetrail_platform.identity.tls import ClientTls, ServerTls
from casetrail_platform.identity.verifier import TokenVerifier
from cli.rpc import load_addresses
from services.console.server import start_console
from services.console.settings import (
    ALLOW_PLAINTEXT,
    ConsoleSettings,
    development_sign_in_refusal,
    idle_seconds_from_env,
    require_https_beyond_loopback,
)


def run(options: argparse.Namespace) -> int:
    try:
        issuer = IssuerSettings.from_env()
        # Before anything is loaded: the refusal holds whether or not `make run` has run.
        refusal = development_sign_in_refusal(options.host) if issuer is None else None
        if refusal is not None:
            raise ValueError(refusal)
        https = ServerTls.from_env()  # ValueError naming the bad setting
        plaintext_allowed = allow_plaintext(os.environ, ALLOW_PLAINTEXT)
        require_https_beyond_loopback(options.host, https, plaintext_allowed=plaintext_allowed)
        settings = _settings(options, issuer, https, plaintext_allowed)
    except (LookupError, ValueError) as error:
        print(f"console: {error}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(settings, options.host, options.port))


def _settings(
    options: argparse.Namespace,
    issuer: IssuerSettings | None,
    https: ServerTls | None,
    plaintext_allowed: bool,
) -> ConsoleSettings:
    idle_seconds = idle_seconds_from_env(os.environ)  # ValueError naming the variable
    data_dir = Path(options.data_dir)
    address = options.audit or load_addresses(data_dir).get("audit")
    if not address:
        raise LookupError("no address for audit: pass --audit HOST:PORT")
    problem = port_problem(address)  # 70000 dialled 4464, as command_channel refuses it
    if problem is not None:
        where = "--audit" if options.audit else f"{addresses_file(data_dir)} audit"
        raise ValueError(f"{where}: {problem}")
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
        tls=ClientTls.from_env(),  # ValueError naming the bad setting, reported by run
        # Audit beyond loopback without TLS: PlaintextRefused (a ValueError), reported by run.
        audit_plaintext_allowed=allow_plaintext(os.environ),
        https=https,
        plaintext_allowed=plaintext_allowed,
        secure_cookies=options.secure_cookies,
        idle_seconds=idle_seconds,
    )


async def _serve(settings: ConsoleSettings, host: str, port: int) -> int:
    try:
        console = await start_console(settings, host, port)
    except OSError as error:  # the port taken, or the host not this machine's: one line
        print(
            f"console: cannot listen on {host_port(host, port)}: {error.strerror or error}",
            file=sys.stderr,
        )
        return 2
    print(f"casetrail console on {console.url} (audit at {settings.audit_address})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await console.stop()
    return 0
