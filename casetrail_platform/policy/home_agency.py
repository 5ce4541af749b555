"""The home agency: the one agency whose services these are.

Its staff are those whose token's ``agency`` claim names it (``decide.relationships``): every
decision on who may read or record asks whether the caller works for it. It is one setting,
``CASETRAIL_HOME_AGENCY``, read by each process where it is composed (the runner, the CLI's
``tail``), never at import, and handed to every ``AccessControl``; coordination refuses to start
when its agency file describes another agency (``agency_file.require_home_agency``).

Not ``CASETRAIL_AGENCY``: that one names the ledger's origins (``casetrail/<agency>/<service>``),
which the stores were signed under and which must not change with this.
"""

from __future__ import annotations

from collections.abc import Mapping

from casetrail_platform.identity.claims import is_unit

HOME_AGENCY_VARIABLE = "CASETRAIL_HOME_AGENCY"
DEFAULT_HOME_AGENCY = "eastbay-dss"
"""The built-in example agency's id (coordination's ``example_agency``): what ``make run``,
``make demo`` and the tests serve."""


def home_agency(environ: Mapping[str, str]) -> str:
    """The agency the services serve, from ``CASETRAIL_HOME_AGENCY`` (unset or empty:
    ``DEFAULT_HOME_AGENCY``). An id no token's ``agency`` claim could name (1-64 letters, digits
    or . _ : -, starting with a letter or digit) stops the process at start: no caller would
    ever be its staff."""
    value = environ.get(HOME_AGENCY_VARIABLE, "")
    if not value:
        return DEFAULT_HOME_AGENCY
    if not is_unit(value):
        raise ValueError(
            f"{HOME_AGENCY_VARIABLE} {value!r} must be an agency id as a token's agency claim"
            " names it: 1-64 letters, digits or . _ : -, starting with a letter or digit"
        )
    return value
