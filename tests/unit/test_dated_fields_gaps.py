"""Days in requests and in the catalog are written one way only, YYYY-MM-DD: the edge refuses
anything else in a dated field (a time, a number, an impossible day, a day out of range) naming
the field, every request field named like a day is one the edge knows, and the catalog's days
take no time or number either."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from pydantic import ValidationError

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2
from casetrail.intake.v1 import intake_pb2
from casetrail.planning.v1 import planning_pb2
from casetrail_platform.grpc_platform.edge import DATED_FIELDS, request_problems
from events.catalog.monitoring import ContactLogged
from events.catalog.values import Day

_SERVICE_MODULES = (intake_pb2, planning_pb2, coordination_pb2, audit_pb2)

_LOOKS_DATED = re.compile(
    r"(^|_)(date|day|days|due|until|before|after|since|birth|on|at|time|moment|when|expires?"
    r"|expiry|deadline|from|to|starts?|ends?|year|month)(_|$)"
)
"""A field name that suggests a day or a moment, word by word (``aftercare`` is not one)."""

_NOT_A_DAY = {
    "derived_from": "the name of the rule an as-of view was derived from",
}
"""Request string fields named like a time that hold something else."""

_BAD_DAYS = [
    "1800-01-01T00:00:00",
    "0001-01-01T00:00:00",
    "2999-06-01T00:00:00",
    "2020-01-01T00:00:00",
    "2020-01-01 00:00",
    "0",
    "20200101",
    "2020-02-30",
    "2020-1-01",
    "\u0662\u0660\u0662\u0660-01-01",  # Arabic-Indic digits: \d matches them, dates do not
    "0001-01-01",
    "1800-01-01",
    "1899-12-31",
    "2200-01-01",
    "2500-01-01",
    "9999-12-31",
    "tomorrow",
]


def _request_types() -> Iterator[Descriptor]:
    for module in _SERVICE_MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield method.input_type


def _string_fields_reached(roots: Iterator[Descriptor]) -> Iterator[tuple[str, FieldDescriptor]]:
    seen: set[str] = set()
    waiting = list(roots)
    while waiting:
        message = waiting.pop()
        if message.full_name in seen:
            continue
        seen.add(message.full_name)
        for field in message.fields:
            if field.type == FieldDescriptor.TYPE_STRING:
                yield message.full_name, field
            elif field.message_type is not None:
                waiting.append(field.message_type)


def test_every_request_field_named_like_a_day_is_checked_as_one() -> None:
    looks_dated = {
        f"{message}.{field.name}"
        for message, field in _string_fields_reached(_request_types())
        if _LOOKS_DATED.search(field.name) and field.name not in _NOT_A_DAY
    }

    assert looks_dated, "the walk found no dated field at all"
    assert {name for name in looks_dated if name.rsplit(".", 1)[1] not in DATED_FIELDS} == set()
    assert "casetrail.intake.v1.PlaceRetentionHoldRequest.until" in looks_dated


def _all_message_types() -> Iterator[Descriptor]:
    for module in _SERVICE_MODULES:
        yield from module.DESCRIPTOR.message_types_by_name.values()


def test_every_dated_name_is_a_string_field_of_the_apis() -> None:
    # valid_until is only answered today; a request that takes it later is checked already.
    names = {field.name for _, field in _string_fields_reached(_all_message_types())}

    assert names >= DATED_FIELDS


def _dated_requests(day: str) -> list[tuple[object, str]]:
    return [
        (intake_pb2.RegisterClientRequest(date_of_birth=day), "date_of_birth"),
        (intake_pb2.FindPossibleDuplicatesRequest(date_of_birth=day), "date_of_birth"),
        (intake_pb2.PlaceRetentionHoldRequest(until=day), "until"),
        (intake_pb2.CorrectClientDateOfBirthRequest(date_of_birth=day), "date_of_birth"),
        (planning_pb2.LogContactRequest(next_follow_up_due=day), "next_follow_up_due"),
        (planning_pb2.ListCasesRequest(overdue_before=day), "overdue_before"),
        (planning_pb2.PlanDischargeRequest(target_date=day), "target_date"),
        (
            planning_pb2.DraftPlanRequest(
                goals=[planning_pb2.Goal(tasks=[planning_pb2.Task(target_date=day)])]
            ),
            "goals[0].tasks[0].target_date",
        ),
        (
            coordination_pb2.AcceptReferralRequest(expected_start_date=day),
            "expected_start_date",
        ),
    ]


@pytest.mark.parametrize("day", _BAD_DAYS)
def test_a_dated_field_not_written_as_a_plausible_day_is_refused_naming_it(day: str) -> None:
    for request, field in _dated_requests(day):
        problems = {p.field: p.problem for p in request_problems(request)}  # type: ignore[arg-type]

        assert list(problems) == [field], (request, day)
        assert "YYYY-MM-DD" in problems[field]
        assert len(day) < 4 or day not in problems[field]


@pytest.mark.parametrize("day", ["1900-01-01", "2024-02-29", "2199-12-31"])
def test_a_plausible_day_passes_the_edge(day: str) -> None:
    for request, _ in _dated_requests(day):
        assert request_problems(request) == []  # type: ignore[arg-type]


@pytest.mark.parametrize("day", ["2020-01-01T00:00:00", "0", 0, "20200101", "2020-01-01 00:00"])
def test_the_catalog_takes_a_day_only_as_yyyy_mm_dd(day: object) -> None:
    fields = {
        "case_id": "case-1",
        "contact_id": "contact-1",
        "kind": "phone_call",
        "summary": "Phoned",
        "next_follow_up_due": day,
    }
    with pytest.raises(ValidationError) as refused:
        ContactLogged.model_validate(fields)
    assert refused.value.errors()[0]["loc"] == ("next_follow_up_due",)

    fields["next_follow_up_due"] = "2020-01-01"
    assert ContactLogged.model_validate(fields).next_follow_up_due == date(2020, 1, 1)


def test_the_catalog_day_keeps_the_published_schema() -> None:
    from pydantic import TypeAdapter

    assert TypeAdapter(Day).json_schema() == {"format": "date", "type": "string"}
