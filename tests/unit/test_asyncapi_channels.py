"""Every topic outsiders read has its channel in ``events/asyncapi.yaml``, and the records
published on the ledger-checkpoint topic validate against its message.

The checkpoint topic, the public record other parties keep, had no channel: the document
listed the case-event and dead-letter topics only, so a consumer generated from it never
learnt the topic, its key, its header nor its note format. Validated with ``jsonschema``, a
validator written outside this project, against the committed document.
"""

from __future__ import annotations

import base64
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.topics import TopicSettings
from casetrail_platform.ledger import publication
from casetrail_platform.ledger.keys import FileSigner, handover_note
from casetrail_platform.ledger.note import Checkpoint, origin_of
from casetrail_platform.ledger.port import StoredCheckpoint
from casetrail_platform.ledger.publication import KafkaCheckpointPublisher
from events import topics
from events.asyncapi import DEFAULT_OUTPUT as ASYNCAPI_DOCUMENT

ORIGIN = origin_of("example-agency", "intake")
ROOT = b"r" * 32


@cache
def _document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(ASYNCAPI_DOCUMENT.read_text(encoding="utf-8"))
    return document


def _channel(address: str) -> dict[str, Any]:
    found = [
        channel for channel in _document()["channels"].values() if channel["address"] == address
    ]
    assert len(found) == 1, f"channels at {address}: {len(found)}"
    channel: dict[str, Any] = found[0]
    return channel


def _checkpoint_problems(key: str, headers: dict[str, str], value: str) -> list[str]:
    """A record of the checkpoint topic against its channel's one message; the message's
    references point into the whole document, so the document is the root resource."""
    [reference] = _channel(topics.LEDGER_CHECKPOINTS_TOPIC)["messages"].values()
    message = reference["$ref"]
    problems = []
    for part, instance in (
        ("bindings/kafka/key", key),
        ("headers", headers),
        ("payload", value),
    ):
        schema = {**_document(), "$ref": f"{message}/{part}"}
        Draft202012Validator.check_schema(schema)
        problems += [
            f"{part}: {error.message[:200]}"
            for error in Draft202012Validator(schema).iter_errors(instance)
        ]
    return problems


def test_every_topic_published_to_outsiders_has_a_channel() -> None:
    named = {
        name: value
        for name, value in vars(topics).items()
        if name.endswith("_TOPIC") and isinstance(value, str)
    }
    assert {"DEFAULT_CASE_EVENTS_TOPIC", "LEDGER_CHECKPOINTS_TOPIC"} <= set(named)
    addresses = {channel["address"] for channel in _document()["channels"].values()}
    assert [name for name, topic in named.items() if topic not in addresses] == []
    assert "{group}" + topics.DEAD_LETTER_SUFFIX in addresses


def test_the_checkpoint_channel_states_the_topic_as_it_is_created() -> None:
    created = TopicSettings.production().ledger_topic()
    binding = _channel(created.name)["bindings"]["kafka"]
    assert binding["partitions"] == created.num_partitions == 1
    stated = binding["topicConfiguration"]
    assert stated == {
        "cleanup.policy": [created.topic_configs["cleanup.policy"]],
        "retention.ms": int(created.topic_configs["retention.ms"]),
        "retention.bytes": int(created.topic_configs["retention.bytes"]),
    }
    assert stated["retention.ms"] == -1
    assert stated["cleanup.policy"] == ["delete"]


class _RecordingProducer:
    """Takes what the publisher sends, as aiokafka's producer would."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def start(self) -> None:
        pass

    async def send_and_wait(self, topic: str, **record: Any) -> None:
        self.sent.append({"topic": topic, **record})


async def _notes(tmp_path: Path) -> list[str]:
    """A checkpoint signed by the log's key, and one signed at a key rotation (two lines)."""
    old = FileSigner(ORIGIN, tmp_path / "old.key")
    new = FileSigner(ORIGIN, tmp_path / "new.key")
    return [
        await old.sign_checkpoint(Checkpoint(ORIGIN, 12, ROOT)),
        await handover_note(Checkpoint(ORIGIN, 9_223_372_036_854_775_807, ROOT), old, new),
    ]


async def test_every_checkpoint_published_validates_against_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = _RecordingProducer()
    monkeypatch.setattr(publication, "new_producer", lambda settings, client_id: producer)
    publisher = KafkaCheckpointPublisher(KafkaSettings())
    notes = await _notes(tmp_path)
    for note in notes:
        await publisher.publish(StoredCheckpoint(12, note))
    assert [record["value"].decode() for record in producer.sent] == notes
    for record in producer.sent:
        assert record["topic"] == topics.LEDGER_CHECKPOINTS_TOPIC
        headers = {name: value.decode() for name, value in record["headers"]}
        assert _checkpoint_problems(record["key"].decode(), headers, record["value"].decode()) == []


async def test_a_record_that_is_no_signed_checkpoint_is_refused_by_its_message(
    tmp_path: Path,
) -> None:
    [note, _] = await _notes(tmp_path)
    body = note.split("\n\n")[0] + "\n"
    root = base64.b64encode(ROOT).decode()
    headers = {"content-type": "text/plain; charset=utf-8"}
    assert _checkpoint_problems(ORIGIN, headers, note) == []
    for key, header, value in [
        ("intake", headers, note),
        (ORIGIN, {"content-type": "application/json"}, note),
        (ORIGIN, {}, note),
        (ORIGIN, headers, body),
        (ORIGIN, headers, body + "\n"),
        (ORIGIN, headers, note.replace(f"\n12\n{root}", f"\n012\n{root}")),
        (ORIGIN, headers, note.replace(root, root[:-4])),
        (ORIGIN, headers, note.replace("\u2014", "-")),
    ]:
        assert _checkpoint_problems(key, header, value) != [], (key, header, value)
