"""Refusals of the audit service: the platform's refusal kinds, named for audit's nouns."""

from __future__ import annotations

from casetrail_platform.commands import InvalidCommand, NotFound
from events.errors import FieldProblem


class CaseNotFound(NotFound):
    """Audit has received no event of this case."""

    def __init__(self, case_id: str) -> None:
        super().__init__("case", case_id)


class ClientNotFound(NotFound):
    """Audit knows neither a case nor the registration of this client."""

    def __init__(self, client_id: str) -> None:
        super().__init__("client", client_id)


def invalid(field: str, problem: str) -> InvalidCommand:
    return InvalidCommand([FieldProblem(field, problem)])
