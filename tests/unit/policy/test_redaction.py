"""Withholding sensitive fields of an answer by path."""

from __future__ import annotations

from casetrail.audit.v1 import audit_pb2
from casetrail.coordination.v1 import coordination_pb2
from casetrail.intake.v1 import intake_pb2
from casetrail.planning.v1 import planning_pb2
from casetrail_platform.policy import redaction


def record() -> intake_pb2.GetCaseResponse:
    return intake_pb2.GetCaseResponse(
        record=intake_pb2.CaseRecord(
            case_id="case-1",
            presenting_needs=[
                intake_pb2.PresentingNeed(category="housing", description="evicted"),
                intake_pb2.PresentingNeed(category="substance_use", description="alcohol"),
            ],
            assessments=[
                intake_pb2.InitialAssessment(
                    factors=intake_pb2.AssessmentFactors(psychological="low mood", social="alone")
                )
            ],
        )
    )


PATHS = (
    "record.presenting_needs.category",
    "record.presenting_needs.description",
    "record.assessments.factors.psychological",
    "record.assessments.risks",
)


def test_present_lists_only_paths_holding_a_value() -> None:
    assert redaction.present(record(), PATHS) == list(PATHS[:3])


def test_redact_clears_sensitive_values_and_keeps_the_rest() -> None:
    answer = record()
    assert redaction.redact(answer, PATHS) == list(PATHS[:3])
    needs = answer.record.presenting_needs
    # The need of a special category goes whole: a blank category would tell it was one.
    assert [n.category for n in needs] == ["housing"]
    assert [n.description for n in needs] == [""]
    assert answer.record.assessments[0].factors.social == "alone"
    assert answer.record.assessments[0].factors.psychological == ""
    assert redaction.present(answer, PATHS) == []


def test_keep_referred_keeps_only_the_entries_of_the_referrals_given() -> None:
    answer = coordination_pb2.GetCaseCoordinationResponse(
        referrals=[
            coordination_pb2.Referral(referral_id="r-1", service="home care"),
            coordination_pb2.Referral(referral_id="r-2", service="counseling"),
        ],
        services=[
            coordination_pb2.ScheduledService(service_id="s-1", referral_id="r-2"),
            coordination_pb2.ScheduledService(service_id="s-2", referral_id="r-1"),
            coordination_pb2.ScheduledService(service_id="s-3"),
        ],
    )
    lists = {"referrals": "referral_id", "services": "referral_id"}
    redaction.keep_referred(answer, lists, {"r-1"})
    assert [r.service for r in answer.referrals] == ["home care"]
    assert [s.service_id for s in answer.services] == ["s-2"]


def test_a_service_kind_that_reveals_substance_use_is_withheld_like_the_need() -> None:
    answer = coordination_pb2.GetClientScheduleResponse(
        services=[
            coordination_pb2.ScheduledService(service_id="s-1", kind="addiction_counseling"),
            coordination_pb2.ScheduledService(service_id="s-2", kind="home_care"),
        ]
    )
    assert redaction.redact(answer, ("services.kind",)) == ["services.kind"]
    assert [service.service_id for service in answer.services] == ["s-2"]


def _schedule(*kinds: str) -> coordination_pb2.GetClientScheduleResponse:
    return coordination_pb2.GetClientScheduleResponse(
        services=[
            coordination_pb2.ScheduledService(service_id=f"s-{n}", kind=kind)
            for n, kind in enumerate(kinds)
        ]
    )


def test_a_withheld_kind_leaves_no_trace_in_the_answer_nor_in_the_paths_withheld() -> None:
    """addiction_counseling is the only kind that is special data: a blank kind, or the path
    listed only when one was taken, would name it. Two schedules that differ by one such
    service read the same once redacted."""
    with_counseling = _schedule("home_care", "addiction_counseling")
    without = _schedule("home_care")
    withheld = redaction.redact(with_counseling, ("services.kind",))
    assert withheld == redaction.redact(without, ("services.kind",)) == ["services.kind"]
    assert with_counseling == without


def test_a_list_of_categories_loses_the_special_ones_and_is_listed_whatever_it_held() -> None:
    needs = coordination_pb2.GetCaseCoordinationResponse(needs=["housing", "substance_use"])
    assert redaction.redact(needs, ("needs",)) == ["needs"]
    assert list(needs.needs) == ["housing"]
    plain = coordination_pb2.GetCaseCoordinationResponse(needs=["housing"])
    assert redaction.redact(plain, ("needs",)) == ["needs"]
    assert needs == plain


def test_a_field_naming_an_entry_withheld_whole_is_cleared_and_listed_whatever_it_held() -> None:
    answer = coordination_pb2.GetCaseCoordinationResponse(
        referrals=[
            coordination_pb2.Referral(referral_id="r-1", need_category="substance_use"),
            coordination_pb2.Referral(referral_id="r-2", need_category="housing"),
        ],
        services=[
            coordination_pb2.ScheduledService(service_id="s-1", referral_id="r-1"),
            coordination_pb2.ScheduledService(service_id="s-2", referral_id="r-2"),
            coordination_pb2.ScheduledService(service_id="s-3"),
        ],
    )
    special = redaction.special_ids(answer, "referrals.need_category", "referral_id")
    assert special == {"r-1"}
    redaction.redact(answer, ("referrals.need_category",))
    links = {"services.referral_id": special}
    assert redaction.unlink(answer, links) == ["services.referral_id"]
    assert [r.referral_id for r in answer.referrals] == ["r-2"]
    # The service stays (its kind is no special data), naming no referral the answer lacks.
    assert [(s.service_id, s.referral_id) for s in answer.services] == [
        ("s-1", ""),
        ("s-2", "r-2"),
        ("s-3", ""),
    ]
    # Nothing to clear, the path is listed all the same: listed only when an id was cleared,
    # it would tell that the case has special data.
    assert redaction.unlink(answer, links) == ["services.referral_id"]


def test_goals_withheld_whole_within_plans_are_found_and_unlisted_whatever_a_list_held() -> None:
    def plan(plan_id: str, *goals: tuple[str, str]) -> audit_pb2.Plan:
        return audit_pb2.Plan(
            plan_id=plan_id,
            agreed_goal_ids=[goal_id for goal_id, _ in goals],
            goals=[audit_pb2.PlanGoal(goal_id=i, need_category=need) for i, need in goals],
        )

    # A list within a message (audit's plan), and lists within a list whose entries hold their
    # id within them (planning's earlier plans, of goal views).
    answer = audit_pb2.CaseState(
        plan=plan("plan-1", ("g-walk", "home_care"), ("g-sober", "substance_use"))
    )
    view = planning_pb2.GetCaseViewResponse(
        previous_plans=[
            planning_pb2.PlanView(
                goals=[
                    planning_pb2.GoalView(
                        goal=planning_pb2.Goal(goal_id=goal_id, need_category=need)
                    )
                    for goal_id, need in (("g-old", "mental_health"), ("g-home", "housing"))
                ]
            )
        ]
    )

    assert redaction.special_ids(answer, "plan.goals.need_category", "goal_id") == {"g-sober"}
    assert redaction.special_ids(
        view, "previous_plans.goals.goal.need_category", "goal.goal_id"
    ) == {"g-old"}
    assert redaction.special_ids(view, "plan.goals.goal.need_category", "goal.goal_id") == (
        frozenset()
    )
    lists = {"plan.agreed_goal_ids": frozenset({"g-sober"})}
    assert redaction.unlist(answer, lists) == ["plan.agreed_goal_ids"]
    assert list(answer.plan.agreed_goal_ids) == ["g-walk"]
    # Nothing to delete, the path is listed all the same, as unlink's.
    plain = audit_pb2.CaseState(plan=plan("plan-1", ("g-walk", "home_care")))
    assert redaction.unlist(plain, lists) == ["plan.agreed_goal_ids"]
    assert list(plain.plan.agreed_goal_ids) == ["g-walk"]
