"""What coordination knows of a case from intake (via the bus): whose it is and what they need."""

from __future__ import annotations

from dataclasses import dataclass

from events.catalog.values import NeedCategory


@dataclass(frozen=True, slots=True)
class CaseFacts:
    case_id: str
    client_id: str
    needs: tuple[NeedCategory, ...]
    """Presenting and assessed needs, each once, in the order they were first recorded."""
    closed: bool = False


def case_stream(case_id: str) -> str:
    return f"case-{case_id}"


def schedule_stream(client_id: str) -> str:
    """All of a client's services, across their cases, are one stream: the overlap rule spans
    them, and one stream makes the check exact under concurrent schedulers."""
    return f"schedule-{client_id}"


def budget_stream(budget_line: str) -> str:
    """All reservations on a budget line are one stream, so the line is never overspent."""
    return f"budget-{budget_line}"
