"""The local development issuer of the embedded default (``make run``): DEVELOPMENT ONLY.

Its signing key lives in the data directory (``identity/DEVELOPMENT-ONLY-signing-key.pem``),
its discovery document and JWKS are served over HTTP on 127.0.0.1, and
``identity/DEVELOPMENT-ONLY-issuer.json`` tells local clients (``casetrail login``,
``make demo``) its address so that they can mint tokens with the key. Anyone who can read the
data directory can act as anyone: a real deployment uses the organisation's OIDC provider
(``CASETRAIL_OIDC_ISSUER``), and the distributed backend never starts this issuer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from casetrail_platform.identity.issuer_http import IssuerHttpServer
from casetrail_platform.identity.tokens import SigningKey, mint
from casetrail_platform.private_files import private_replacement, read_private, small_text

AUDIENCE = "casetrail"
DEFAULT_PORT = 7300
"""Next to the services' 7301-7304, below Linux's ephemeral range."""
KEY_FILE = "DEVELOPMENT-ONLY-signing-key.pem"
INFO_FILE = "DEVELOPMENT-ONLY-issuer.json"
DEFAULT_AGENCY = "eastbay-dss"
"""The agency of coordination's built-in example agency."""
MAX_FILE_BYTES = 64 * 1024
"""Far above the key's PEM and the issuer's address: a larger file is neither, and is not
read whole."""


def identity_dir(data_dir: Path) -> Path:
    return data_dir / "identity"


@dataclass(frozen=True)
class DevelopmentSigner:
    """Mints tokens for the development issuer at ``issuer``."""

    key: SigningKey
    issuer: str
    audience: str = AUDIENCE

    @classmethod
    def load(cls, data_dir: Path) -> DevelopmentSigner:
        """The signer of the issuer that `make run` started with ``data_dir``;
        ``LookupError`` when there is none, ``ValueError`` when its key is not private."""
        folder = identity_dir(data_dir)
        try:
            info = json.loads(small_text(folder / INFO_FILE, MAX_FILE_BYTES))
            key = _read_key(folder / KEY_FILE)
        except FileNotFoundError:
            raise LookupError(
                f"no development issuer in {folder}: start casetrail with `make run` "
                "(the embedded default) or use your organisation's issuer"
            ) from None
        return cls(key, str(info["issuer"]), str(info.get("audience", AUDIENCE)))

    def mint(
        self,
        subject: str,
        role: str,
        *,
        agency: str = DEFAULT_AGENCY,
        team: str | None = None,
        entitlements: Iterable[str] = (),
        lifetime_seconds: float = 8 * 3600.0,
    ) -> str:
        return mint(
            self.key,
            issuer=self.issuer,
            audience=self.audience,
            subject=subject,
            role=role,
            agency=agency,
            team=team,
            entitlements=entitlements,
            lifetime_seconds=lifetime_seconds,
        )


class DevelopmentIssuer:
    """The running development issuer: its HTTP face and its signer."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        folder = identity_dir(data_dir)
        # Owner-only: it holds the signing key and the saved login token.
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = _load_or_create_key(folder / KEY_FILE)
        public = [key.public_jwk()]
        self._server = IssuerHttpServer(lambda: public, host, port)
        self.url = self._server.url
        self.signer = DevelopmentSigner(key, self.url)
        info = {"issuer": self.url, "audience": AUDIENCE, "development_only": True}
        # Whole or not at all, onto the file itself (a link planted at its name is replaced).
        with private_replacement(folder / INFO_FILE) as file:
            file.write((json.dumps(info, indent=2) + "\n").encode())

    def stop(self) -> None:
        self._server.stop()


def _read_key(path: Path) -> SigningKey:
    """The key in ``path``, refused (``ValueError``) when others may read it: whoever reads it
    can mint a token for anyone."""
    return SigningKey.from_pem(
        read_private(path, "the development signing key", limit=MAX_FILE_BYTES)
    )


def _load_or_create_key(path: Path) -> SigningKey:
    if path.exists():
        return _read_key(path)
    key = SigningKey.generate("ES256")
    # Readable by its owner only, and whole: a start killed mid-write left a key cut short
    # that every later start refused.
    with private_replacement(path) as file:
        file.write(key.pem())
    return key
