"""The built-in example agency, used when no ``agency.json`` is configured.

Everything is invented. Amounts are in cents. ``python -m
services.coordination.adapters.example_agency`` prints it as an ``agency.json`` to start from.
"""

from __future__ import annotations

from typing import Any

from services.coordination.domain.agency import Agency

_COUNTIES = ["us-ca-alameda", "us-ca-contra-costa"]
_BOARD = "State Board of Behavioral Sciences"


def _licence(name: str, valid_until: str) -> dict[str, Any]:
    return {"kind": "licence", "name": name, "issued_by": _BOARD, "valid_until": valid_until}


def _degree(name: str, issued_by: str) -> dict[str, Any]:
    return {"kind": "degree", "name": name, "issued_by": issued_by}


EXAMPLE: dict[str, Any] = {
    "agency_id": "eastbay-dss",
    "name": "East Bay Department of Social Services (example)",
    "workers": [
        {
            "worker_id": "sw-amara-okafor",
            "name": "Amara Okafor",
            "role": "social_worker",
            "credentials": [
                _degree("MSW", "University of California, Berkeley"),
                _licence("LCSW", "2028-06-30"),
                {"kind": "certification", "name": "C-ASWCM", "issued_by": "NASW"},
            ],
            "caseload_capacity": 18,
            "team": "team-east",
        },
        {
            "worker_id": "sw-luis-ortega",
            "name": "Luis Ortega",
            "role": "social_worker",
            "credentials": [
                _degree("MSW", "San Francisco State University"),
                _licence("LMSW", "2028-12-31"),
            ],
            "caseload_capacity": 20,
            "team": "team-east",
        },
        {
            "worker_id": "sw-grace-kim",
            "name": "Grace Kim",
            "role": "social_worker",
            "credentials": [
                _degree("BSW", "California State University, East Bay"),
                _licence("LBSW", "2028-03-31"),
            ],
            "caseload_capacity": 24,
            "team": "team-west",
        },
        {
            "worker_id": "sw-tom-becker",
            "name": "Tom Becker",
            "role": "social_worker",
            "credentials": [_degree("BSW", "Sacramento State University")],
            "caseload_capacity": 24,
            "team": "team-west",
        },
        {
            "worker_id": "cm-dana-reyes",
            "name": "Dana Reyes",
            "role": "case_manager",
            "credentials": [
                _degree("BSN", "Samuel Merritt University"),
                {
                    "kind": "certification",
                    "name": "CCM",
                    "issued_by": "Commission for Case Manager Certification",
                },
            ],
            "caseload_capacity": 30,
            "team": "team-east",
        },
        {
            "worker_id": "cm-sam-patel",
            "name": "Sam Patel",
            "role": "case_manager",
            "credentials": [_degree("BA Human Services", "Mills College")],
            "caseload_capacity": 30,
            "team": "team-west",
        },
        {
            "worker_id": "sup-helen-morris",
            "name": "Helen Morris",
            "role": "supervisor",
            "credentials": [_licence("LCSW", "2029-01-31")],
            "caseload_capacity": 0,
            "team": "team-east",
        },
    ],
    "programs": [
        {
            "program_id": "home-care-medicaid-waiver",
            "name": "Home and community-based care (Medicaid waiver)",
            "min_age": 65,
            "max_monthly_income": {"amount_minor_units": 290_100, "currency": "USD"},
            "residence_in": _COUNTIES,
            "valid_for_days": 365,
        },
        {
            "program_id": "senior-paratransit",
            "name": "Senior paratransit to medical appointments",
            "min_age": 60,
            "residence_in": _COUNTIES,
            "valid_for_days": 365,
        },
        {
            "program_id": "senior-day-programme",
            "name": "Senior centre day programme (socialisation)",
            "min_age": 60,
        },
        {
            "program_id": "food-assistance",
            "name": "Food assistance",
            "max_monthly_income": {"amount_minor_units": 163_300, "currency": "USD"},
            "valid_for_days": 180,
        },
    ],
    "budget_lines": [
        {
            "budget_line": "home-care-fy2025",
            "name": "Home care, fiscal year 2025",
            "amount": {"amount_minor_units": 25_000_000, "currency": "USD"},
            "funds_service_kinds": ["home_care"],
        },
        {
            "budget_line": "counseling-fy2025",
            "name": "Counseling and addiction counseling, fiscal year 2025",
            "amount": {"amount_minor_units": 6_000_000, "currency": "USD"},
            "funds_service_kinds": ["counseling", "addiction_counseling"],
        },
        {
            "budget_line": "therapy-fy2025",
            "name": "Physical therapy, fiscal year 2025",
            "amount": {"amount_minor_units": 5_000_000, "currency": "USD"},
            "funds_service_kinds": ["physical_therapy"],
        },
        {
            "budget_line": "transport-fy2025",
            "name": "Transport to appointments, fiscal year 2025",
            "amount": {"amount_minor_units": 4_000_000, "currency": "USD"},
            "funds_service_kinds": ["transportation"],
        },
        {
            "budget_line": "flex-fund-fy2025",
            "name": "Flexible client fund, fiscal year 2025",
            "amount": {"amount_minor_units": 1_000_000, "currency": "USD"},
        },
    ],
}


def example_agency() -> Agency:
    return Agency.model_validate(EXAMPLE)


if __name__ == "__main__":
    print(example_agency().model_dump_json(indent=2, exclude_none=True))
