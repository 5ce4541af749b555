"""Whether libpq can use a DSN, checked before the first connection.

libpq parses a DSN's syntax at once but checks some values only when it connects, and the
stores report a failed connection as the database being away ("unavailable; retry later"): a
port that is no number or beyond 65535, an unknown ``sslmode``, an IPv6 host unbracketed in a
URI (``postgres@::1:5432/db`` is no host and the port ``:1:5432``). They are refused here, by
what is wrong and never the DSN's text: it may hold a password.
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict

from casetrail_platform.addresses import MAX_PORT

ENUMERATED = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "target_session_attrs": (
        "any",
        "read-write",
        "read-only",
        "primary",
        "standby",
        "prefer-standby",
    ),
    "load_balance_hosts": ("disable", "random"),
}
"""The options whose values libpq takes from a list, as it spells them (case matters)."""


class UnusableDsn(ValueError):
    """The DSN is one libpq would refuse: what is wrong, never the DSN (the caller names
    where it came from: ``--pg-dsn``, ``CASETRAIL_PG_DSN``)."""


def checked_dsn(dsn: str) -> str:
    """``dsn`` when libpq can connect with it (``UnusableDsn`` saying why not)."""
    try:
        parts = conninfo_to_dict(dsn)
    except (psycopg.ProgrammingError, UnicodeEncodeError):
        # Never the driver's text: it quotes the DSN.
        raise UnusableDsn("not a PostgreSQL connection string (key=value pairs or a URI)") from None
    # One port for every host, or one each; an empty one is libpq's default.
    for port in str(parts.get("port", "")).split(","):
        port = port.strip()
        if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= MAX_PORT):
            raise UnusableDsn(
                f"the port must be a number from 1 to {MAX_PORT} (an IPv6 host in brackets:"
                " postgresql://user@[::1]:5432/db)"
            )
    for option, allowed in ENUMERATED.items():
        value = parts.get(option)
        if value is not None and value not in allowed:
            raise UnusableDsn(f"{option} must be one of {', '.join(allowed)}, got {value!r}")
    return dsn
