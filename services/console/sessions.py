"""Console sessions: kept in the process, named by a signed, HttpOnly, SameSite=Strict cookie.

The browser holds only the session's random id, signed (itsdangerous) and time-limited; the
bearer token stays on the server. A session ends at its absolute expiry or after ``idle``
seconds without a request, whichever comes first: a console left open on an unattended desk
must not keep showing special-category data to whoever sits down next. Signing in starts a new
session (a session id known before sign-in is worth nothing after it).

A visitor not signed in holds no state on the server: the sign-in form's session is its
cookie alone, a random id and its expiry signed, and the form's CSRF token a keyed digest of
that id. Kept in the process, as they were, every visit without a cookie added one, and past
``MAX_SESSIONS`` the oldest were dropped, an auditor's open sign-in form among them: whoever
sent requests fast enough kept everyone from signing in.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from itsdangerous import BadSignature, Signer, TimestampSigner

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
"""Signed-in sessions kept, the oldest dropped beyond it (each took a verified token)."""
MAX_SESSIONS_PER_PERSON = 5
"""Signed-in sessions one person (a token's issuer and subject) holds, their own oldest ended
beyond it: a console open in a few browsers, never enough to push others out of
``MAX_SESSIONS``."""


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
    """The signed-in sessions of one console process.

    A person holds at most ``MAX_SESSIONS_PER_PERSON``: their sixth sign-in ends their own
    oldest session. One token signed in again and again (a sign-in form posted 10,001 times)
    filled ``MAX_SESSIONS`` and dropped everyone else's. Filling it now takes verified tokens
    of ``MAX_SESSIONS / MAX_SESSIONS_PER_PERSON`` (2,000) different people, each an auditor or
    supervisor the issuer vouches for; past it the oldest sessions, anyone's, are still dropped,
    which only the issuer can bring about.
    """

    def __init__(
        self,
        *,
        secret: bytes | None = None,
        lifetime: float,
        idle: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        secret = secret or secrets.token_bytes(32)
        self._signer = TimestampSigner(secret, salt="console-session")
        self._anonymous_signer = Signer(secret, salt="console-signin")
        self._csrf_signer = Signer(secret, salt="console-signin-csrf")
        self._signed_in: OrderedDict[str, Session] = OrderedDict()
        self._of_person: dict[tuple[str, str, str], OrderedDict[str, None]] = {}
        """Each person's signed-in session ids, oldest first."""
        self.lifetime = lifetime
        self.idle = idle
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    def find(self, cookie: str | None) -> Session | None:
        """The live signed-in session a cookie names, or None (unsigned, forged, expired, idle
        too long or unknown). Finding it counts as activity: its idle time starts again."""
        if not cookie:
            return None
        try:
            session_id = self._signer.unsign(cookie, max_age=int(self.lifetime) + 1).decode()
        except (BadSignature, UnicodeDecodeError):
            return None
        session = self._signed_in.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now >= session.expires_at or now - session.last_seen >= self.idle:
            self.end(session)
            return None
        session.last_seen = now
        return session

    def start_anonymous(self) -> Session:
        """A sign-in form's session: kept nowhere but in its cookie (``cookie_value``)."""
        return self._anonymous(_new_id(), int(self._clock() + ANONYMOUS_SECONDS))

    def find_anonymous(self, cookie: str | None) -> Session | None:
        """The sign-in form's session a cookie holds, or None (unsigned, forged or expired)."""
        if not cookie:
            return None
        try:
            session_id, _, until = self._anonymous_signer.unsign(cookie).decode().partition(".")
        except (BadSignature, UnicodeDecodeError):
            return None
        if not until.isdigit() or self._clock() >= int(until):
            return None
        return self._anonymous(session_id, int(until))

    def _anonymous(self, session_id: str, until: int) -> Session:
        csrf = self._csrf_signer.get_signature(session_id).decode()
        return Session(session_id, csrf, float(until), self._clock())

    def sign_in(
        self, previous: Session | None, principal: Principal, token: str, purpose: str, until: float
    ) -> Session:
        if previous is not None:
            self.end(previous)
        now = self._clock()
        expires_at = min(now + self.lifetime, until)
        session = Session(_new_id(), _new_id(), expires_at, now, principal, token, purpose)
        self._signed_in[session.id] = session
        theirs = self._of_person.setdefault(_person(principal), OrderedDict())
        theirs[session.id] = None
        while len(theirs) > MAX_SESSIONS_PER_PERSON:
            self.end(self._signed_in[next(iter(theirs))])
        while len(self._signed_in) > MAX_SESSIONS:
            self.end(next(iter(self._signed_in.values())))
        return session

    def end(self, session: Session) -> None:
        """Ends a signed-in session (a sign-in form's lasts until its cookie expires)."""
        if self._signed_in.pop(session.id, None) is None or session.principal is None:
            return
        person = _person(session.principal)
        theirs = self._of_person[person]
        del theirs[session.id]
        if not theirs:
            del self._of_person[person]

    def cookie_value(self, session: Session) -> str:
        if session.signed_in:
            return self._signer.sign(session.id).decode()
        return self._anonymous_signer.sign(f"{session.id}.{int(session.expires_at)}").decode()


def csrf_matches(session: Session, given: object) -> bool:
    """Compared as bytes: ``compare_digest`` refuses a ``str`` that is not ASCII with a
    ``TypeError`` (a form's ``csrf=%C3%A9`` was then a fault, 500, where it is refused)."""
    return (
        isinstance(given, str)
        and given.isascii()
        and hmac.compare_digest(session.csrf.encode(), given.encode())
    )


def _person(principal: Principal) -> tuple[str, str, str]:
    """Who signed in: a subject is one person within its issuer and agency (as the policy
    holds: another agency's namesake is someone else)."""
    return principal.issuer, principal.agency, principal.subject


def _new_id() -> str:
    return secrets.token_urlsafe(32)
