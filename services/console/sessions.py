"""Console sessions: kept in the process, named by a signed, HttpOnly, SameSite=Strict cookie.

The browser holds only the session's random id, signed (itsdangerous) and time-limited; the
bearer token stays on the server. A session ends at its absolute expiry or after ``idle``
seconds without a request, whichever comes first: a console left open on an unattended desk
must not keep showing special-category data to whoever sits down next. Every visitor gets a
session, signed in or not, so that the sign-in form carries a CSRF token too; signing in
starts a new session (a session id known before sign-in is worth nothing after it).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from itsdangerous import BadSignature, TimestampSigner

from casetrail_platform.identity.principal import Principal

COOKIE = "casetrail_console"
"""Names a signed-in session."""
ANONYMOUS_COOKIE = "casetrail_console_signin"
"""Names a session before sign-in. Kept apart so that it never replaces a signed-in one: a
link from another site is a navigation without the SameSite=Strict cookie, and the anonymous
session its page started overwrote the auditor's, signing them out."""
ANONYMOUS_SECONDS = 15 * 60.0
"""How long a visitor may take to fill in the sign-in form."""
MAX_SESSIONS = 10_000
"""Per kind (anonymous, signed in), the oldest are dropped beyond this many: visitors who never
sign in cost memory, and however many of them come they never push a signed-in auditor out."""


@dataclass
class Session:
    id: str
    csrf: str
    expires_at: float
    last_seen: float
    principal: Principal | None = None
    token: str = ""
    purpose: str = ""

    @property
    def signed_in(self) -> bool:
        return self.principal is not None


class SessionStore:
    def __init__(
        self,
        *,
        secret: bytes | None = None,
        lifetime: float,
        idle: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._signer = TimestampSigner(secret or secrets.token_bytes(32), salt="console-session")
        self._anonymous: OrderedDict[str, Session] = OrderedDict()
        self._signed_in: OrderedDict[str, Session] = OrderedDict()
        self.lifetime = lifetime
        self.idle = idle
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    def find(self, cookie: str | None) -> Session | None:
        """The live session a cookie names, or None (unsigned, forged, expired, idle too long or
        unknown). Finding it counts as activity: its idle time starts again."""
        if not cookie:
            return None
        try:
            session_id = self._signer.unsign(cookie, max_age=int(self.lifetime) + 1).decode()
        except (BadSignature, UnicodeDecodeError):
            return None
        session = self._signed_in.get(session_id) or self._anonymous.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now >= session.expires_at or now - session.last_seen >= self.idle:
            self.end(session)
            return None
        session.last_seen = now
        return session

    def start_anonymous(self) -> Session:
        now = self._clock()
        return self._add(Session(_new_id(), _new_id(), now + ANONYMOUS_SECONDS, now))

    def sign_in(
        self, previous: Session | None, principal: Principal, token: str, purpose: str, until: float
    ) -> Session:
        if previous is not None:
            self.end(previous)
        now = self._clock()
        expires_at = min(now + self.lifetime, until)
        return self._add(Session(_new_id(), _new_id(), expires_at, now, principal, token, purpose))

    def end(self, session: Session) -> None:
        self._signed_in.pop(session.id, None)
        self._anonymous.pop(session.id, None)

    def cookie_value(self, session: Session) -> str:
        return self._signer.sign(session.id).decode()

    def _add(self, session: Session) -> Session:
        kept = self._signed_in if session.signed_in else self._anonymous
        kept[session.id] = session
        while len(kept) > MAX_SESSIONS:
            kept.popitem(last=False)
        return session


def csrf_matches(session: Session, given: object) -> bool:
    """Compared as bytes: ``compare_digest`` refuses a ``str`` that is not ASCII with a
    ``TypeError`` (a form's ``csrf=%C3%A9`` was then a fault, 500, where it is refused)."""
    return (
        isinstance(given, str)
        and given.isascii()
        and hmac.compare_digest(session.csrf.encode(), given.encode())
    )


def _new_id() -> str:
    return secrets.token_urlsafe(32)
