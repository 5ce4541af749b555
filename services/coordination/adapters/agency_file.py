"""Loading the agency configuration from ``agency.json`` (workers, programmes, budget lines).

The file has the shape of ``Agency`` (see ``example_agency`` for a complete one). A missing
file means the built-in example agency; a file that is present but wrong stops the service at
start, naming each bad field, rather than running with half a configuration.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import ValidationError

from casetrail_platform.policy.home_agency import HOME_AGENCY_VARIABLE
from services.coordination.adapters.example_agency import example_agency
from services.coordination.domain.agency import Agency
from services.coordination.domain.validation import problems_of

log = logging.getLogger(__name__)

FILE_NAME = "agency.json"


class AgencyConfigError(Exception):
    """``agency.json`` cannot be read or does not describe an agency."""


def load_agency(path: Path) -> Agency:
    if not path.exists():
        log.warning("%s not found: using the built-in example agency", path)
        return example_agency()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AgencyConfigError(f"{path}: {error}") from error
    try:
        return Agency.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{p.field}: {p.problem}" for p in problems_of(error))
        raise AgencyConfigError(f"{path}: {problems}") from None


def require_home_agency(agency: Agency, home_agency: str, path: Path) -> None:
    """Stop the start when the agency ``path`` describes (without it, the built-in example
    agency) is not the one the services serve (``CASETRAIL_HOME_AGENCY``): its workers are the
    staff the policy would then refuse, and the home agency's tokens would act on its cases."""
    if agency.agency_id == home_agency:
        return
    described = str(path) if path.exists() else f"the built-in example agency (no {path})"
    raise AgencyConfigError(
        f"{described}: agency_id {agency.agency_id!r} is not the home agency {home_agency!r}"
        f" ({HOME_AGENCY_VARIABLE}); the two must name the same agency"
    )
