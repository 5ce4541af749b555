"""`casetrail login` / `casetrail token`: a bearer token from the development issuer that
`make run` started (DEVELOPMENT ONLY: its signing key is in the data directory).

``login`` saves the token in ``<data dir>/identity/login-token`` (owner-only) for the other
commands; ``token`` prints it (for grpcurl: ``-H "authorization: Bearer $(casetrail token
...)"``). With a real issuer, get a token from it and pass ``--token-file FILE`` (owner-only)
or ``CASETRAIL_TOKEN``; ``--token`` works too, but other users of the machine see it (``ps``).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from casetrail_platform.identity.claims import principal_from_claims
from casetrail_platform.identity.development import DevelopmentSigner, identity_dir
from casetrail_platform.identity.errors import InvalidCredential
from casetrail_platform.identity.settings import IssuerSettings
from casetrail_platform.identity.verifier import MAX_TOKEN_BYTES, TokenVerifier, is_token_text
from casetrail_platform.policy.home_agency import home_agency
from casetrail_platform.private_files import private_replacement, read_private

TOKEN_FILE = "login-token"
TOKEN_VARIABLE = "CASETRAIL_TOKEN"
_OPTIONS = {
    "sub": "--user",
    "agency": "--agency",
    "team": "--team",
    "entitlements": "--entitlement",
}
"""The claim each option becomes, to name the option when the claim's rule refuses it."""


def run(options: argparse.Namespace) -> int:
    data_dir = Path(options.data_dir)
    try:
        # A token for the agency the services serve, unless another is asked for.
        agency = options.agency or home_agency(os.environ)
    except ValueError as error:
        print(f"{options.command}: {error}", file=sys.stderr)
        return 2
    entitlements = options.entitlement or ()
    try:
        # The services' own claim rules, before anything is minted or saved: a token they
        # would all refuse is no login.
        principal_from_claims(
            {
                "sub": options.user,
                "role": options.role,
                "agency": agency,
                "team": options.team,
                "entitlements": list(entitlements),
            },
            issuer="",
        )
    except InvalidCredential as error:
        option = _OPTIONS.get(error.claim or "", "--user")
        print(f"{options.command}: {option}: {error}", file=sys.stderr)
        return 2
    try:
        signer = DevelopmentSigner.load(data_dir)
    except (LookupError, ValueError) as error:
        print(error, file=sys.stderr)
        return 2
    until = datetime.now(UTC) + timedelta(hours=options.hours)
    token = signer.mint(
        options.user,
        options.role,
        agency=agency,
        team=options.team,
        entitlements=entitlements,
        lifetime_seconds=options.hours * 3600,
    )
    if options.command == "token":
        print(token)
        return 0
    path = identity_dir(data_dir) / TOKEN_FILE
    try:
        with private_replacement(path) as file:
            file.write(token.encode() + b"\n")
    except OSError as error:
        print(f"{path}: cannot save the token: {error}", file=sys.stderr)
        return 2
    print(f"logged in as {options.user} ({options.role}) until {until:%Y-%m-%d %H:%M} UTC")
    print(f"token saved in {path} (development issuer {signer.issuer})")
    return 0


def bearer_token(options: argparse.Namespace) -> str:
    """The token a command calls with: --token, --token-file, CASETRAIL_TOKEN, else the saved
    login. A source given is used or refused, never passed over: an empty one ("$UNSET", a
    file or variable holding nothing) exits naming it, where it fell through to the saved
    login and the command ran, and was recorded, as whoever last logged in here. Surrounding
    whitespace is dropped: a token read from a file or a secret often ends in a newline, which
    gRPC refuses in metadata with a traceback."""
    given = getattr(options, "token", None)
    if given is not None:
        return _sendable(str(given).strip(), "--token")
    token_file = getattr(options, "token_file", None)
    if token_file is not None:
        if not token_file.strip():
            raise SystemExit("--token-file: empty (no file named)")
        return _sendable(_read_token_file(Path(token_file)), f"--token-file {token_file}")
    from_environment = os.environ.get(TOKEN_VARIABLE)
    if from_environment is not None:
        # Set, even to nothing: an exported empty variable is the same slip as --token "".
        if not from_environment.strip():
            raise SystemExit(f"{TOKEN_VARIABLE}: empty (unset it to use the saved login)")
        return _sendable(from_environment.strip(), TOKEN_VARIABLE)
    path = identity_dir(Path(options.data_dir)) / TOKEN_FILE
    try:
        # Held to --token-file's rules: owner-only (login writes it so) and bounded.
        saved = read_private(path, "the saved token", limit=MAX_TOKEN_BYTES + 2)
        return _sendable(saved.decode().strip(), str(path))
    except FileNotFoundError:
        raise SystemExit(
            "no token: run `casetrail login --user U --role auditor` (development issuer), "
            f"or pass --token-file FILE or {TOKEN_VARIABLE}"
        ) from None
    except OSError as error:
        raise SystemExit(f"{path}: cannot read the saved token: {error.strerror}") from None
    except UnicodeDecodeError:
        raise SystemExit(f"{path}: not a bearer token (not text)") from None
    except ValueError as error:  # readable by others, or too large
        raise SystemExit(str(error)) from None


def _read_token_file(path: Path) -> str:
    """The token in ``path``, owner-only (a token others can read lets them act as its
    subject), or exit naming the file and the problem, never the content."""
    try:
        return read_private(path, "the bearer token", limit=MAX_TOKEN_BYTES + 2).decode().strip()
    except OSError as error:
        raise SystemExit(f"--token-file {path}: cannot read the token: {error.strerror}") from None
    except UnicodeDecodeError:
        raise SystemExit(f"--token-file {path}: not a bearer token (not text)") from None
    except ValueError as error:  # readable by others, or too large
        raise SystemExit(f"--token-file {error}") from None


def _sendable(token: str, source: str) -> str:
    """``token`` if gRPC can send it as a header, else exit naming ``source`` and the rule,
    never the value (a token is a credential): gRPC refused such a token in the call with a
    traceback of its own, and the services would refuse one this long."""
    if not token:
        raise SystemExit(f"{source}: empty")
    if not is_token_text(token):
        raise SystemExit(f"{source}: not a bearer token (printable ASCII, no spaces)")
    if len(token) > MAX_TOKEN_BYTES:
        raise SystemExit(f"{source}: not a bearer token (longer than {MAX_TOKEN_BYTES} bytes)")
    return token


DISTRIBUTED_ISSUER = (
    "token issuer: the distributed backend needs CASETRAIL_OIDC_ISSUER and"
    " CASETRAIL_OIDC_AUDIENCE (its services never trust a development issuer)"
)
"""Why ``tail`` on the distributed backend refuses without a real issuer (as the runner does)."""


def trusted_verifier(data_dir: Path, *, distributed: bool) -> TokenVerifier:
    """The verifier of the issuer the services trust: the configured one
    (``CASETRAIL_OIDC_ISSUER``), else the development issuer `make run` started in
    ``data_dir``, never on the ``distributed`` backend: its services never start without a
    real issuer, so a development key in a data directory is no issuer they trust. Exits
    naming the setting or file when none is usable."""
    try:
        issuer = IssuerSettings.from_env()
        if issuer is not None:
            return issuer.verifier()
        if distributed:
            raise SystemExit(DISTRIBUTED_ISSUER)
        signer = DevelopmentSigner.load(data_dir)
    except (LookupError, ValueError) as error:
        raise SystemExit(f"token issuer: {error}") from None
    return TokenVerifier.for_issuer(signer.issuer, signer.audience)
