"""The distributed backend creates missing topics with the deployment's partitions and
replication (the variables the Helm chart sets), never the single-broker development defaults;
unset, those defaults still serve the local test broker."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.topics import TopicSettings
from casetrail_platform.grpc_platform.capacity import Capacity
from events.topics import check_topic_name
from services import runner
from services.caseload.settings import CaseloadSettings
from services.console.settings import idle_seconds_from_env
from tests.support.runner import composed_infrastructure

CHART_ENV = {
    "CASETRAIL_CASE_EVENTS_TOPIC": "agency.case-events",
    "CASETRAIL_CASE_EVENTS_PARTITIONS": "12",
    "CASETRAIL_DEAD_LETTER_PARTITIONS": "3",
    "CASETRAIL_KAFKA_REPLICATION_FACTOR": "3",
    "CASETRAIL_KAFKA_MIN_INSYNC_REPLICAS": "2",
}


def test_the_charts_variables_set_partitions_and_replication() -> None:
    settings = TopicSettings.from_env(CHART_ENV)
    case_events, dead_letters = settings.new_topics(["casetrail.intake.projection"])
    assert (case_events.name, case_events.num_partitions) == ("agency.case-events", 12)
    assert dead_letters.num_partitions == 3
    for topic in (case_events, dead_letters, settings.ledger_topic()):
        assert topic.replication_factor == 3
        assert topic.topic_configs["min.insync.replicas"] == "2"


def test_unset_the_development_defaults_serve_one_local_broker() -> None:
    assert TopicSettings.from_env({}) == TopicSettings()
    assert TopicSettings().replication_factor == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [("CASETRAIL_KAFKA_REPLICATION_FACTOR", "three"), ("CASETRAIL_DEAD_LETTER_PARTITIONS", "-1")],
)
def test_a_malformed_variable_is_named(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        TopicSettings.from_env({**CHART_ENV, name: value})


@pytest.mark.parametrize("name", ["casetrail.case-events\n", "", ".", "a b", "x" * 250])
def test_a_topic_name_kafka_would_refuse_is_refused_before_any_bus(name: str) -> None:
    """The in-process bus would take a name ending in a line feed ("$" matches before one),
    and Kafka refuse it after a long wait."""
    with pytest.raises(ValueError, match="topic name"):
        check_topic_name(name)


NUMBER_SETTINGS: list[tuple[str, Callable[[dict[str, str]], object]]] = [
    ("CASETRAIL_CASE_EVENTS_PARTITIONS", TopicSettings.from_env),
    ("CASETRAIL_CASELOAD_SESSION_TIMEOUT", CaseloadSettings.from_env),
    ("CASETRAIL_CASELOAD_WEB_PORT", CaseloadSettings.from_env),
    ("CASETRAIL_KAFKA_PORT", KafkaSettings.from_env),
    ("CASETRAIL_KAFKA_FETCH_MAX_WAIT_MS", KafkaSettings.from_env),
    ("CASETRAIL_GRPC_MAX_CALLS", Capacity.from_env),
    ("CASETRAIL_CONSOLE_IDLE_MINUTES", idle_seconds_from_env),
]
"""The whole numbers the environment sets, each with what reads it (``typed_numbers``)."""


@pytest.mark.parametrize(("name", "read"), NUMBER_SETTINGS)
@pytest.mark.parametrize(
    "value",
    ["\u00b2", "1\u0662", "1" * 5000],
    ids=["superscript-two", "arabic-indic-two", "5000-digits"],
)
def test_a_number_setting_is_ascii_digits_or_refused_naming_its_variable(
    name: str, read: Callable[[dict[str, str]], object], value: str
) -> None:
    """A superscript "²" passed ``str.isdigit`` and ``int`` refused it with "invalid literal
    for int()", naming no variable; "1٢" was read as 12 (``int`` takes any script's digits),
    and 5,000 digits failed ``int``'s limit, naming no variable either."""
    with pytest.raises(ValueError, match=name):
        read({name: value})


def test_min_insync_above_the_replication_factor_is_refused() -> None:
    with pytest.raises(ValueError, match="min_insync_replicas"):
        TopicSettings.from_env({**CHART_ENV, "CASETRAIL_KAFKA_MIN_INSYNC_REPLICAS": "4"})


def test_the_caseload_processor_creates_its_topics_as_replicated() -> None:
    """It creates the case events (no dead letters) and its own changelogs."""
    settings = CaseloadSettings.from_env(CHART_ENV)
    (case_events,) = settings.topics.new_topics()
    assert (case_events.name, case_events.num_partitions) == ("agency.case-events", 12)
    assert case_events.replication_factor == settings.replication_factor == 3
    assert settings.topics.topic_config()["min.insync.replicas"] == "2"


async def test_a_distributed_service_creates_the_topics_the_environment_describes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """services/runner.py: what it hands ensure_topics, and the subscribers' dead letters."""
    for name, value in CHART_ENV.items():
        monkeypatch.setenv(name, value)
    options = runner.parse(["--backend", "distributed", "--service", "intake"])
    infra = await composed_infrastructure(monkeypatch, options, tmp_path)

    created: list[TopicSettings] = []

    async def ensure_topics(_kafka: KafkaSettings, topics: TopicSettings) -> None:
        created.append(topics)

    async def start_services(*_: Any) -> list[Any]:
        return []

    monkeypatch.setattr(runner, "ensure_topics", ensure_topics)
    monkeypatch.setattr(runner, "start_services", start_services)
    await runner.start_distributed(
        argparse.Namespace(**vars(options)), infra, ["intake"], {}, asyncio.Event()
    )
    assert created == [TopicSettings.from_env(CHART_ENV)]
    assert infra.topics == TopicSettings.from_env(CHART_ENV)
