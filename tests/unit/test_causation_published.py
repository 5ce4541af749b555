"""The published ``causationid`` says what the services set: the id of the command that recorded
the event, shared by every event it recorded (``CommandContext.new_events``); only a service's
own follow-up of an event names that event. The envelope schema, the AsyncAPI document's
``ce_causationid`` header and the catalog's table said "the event that caused this one", so a
subscriber looked for an event under a command's id and found none."""

from __future__ import annotations

import json
from typing import Any

import yaml

import events.cloudevents
from casetrail_platform.commands import CommandContext
from events.asyncapi import DEFAULT_OUTPUT as ASYNCAPI_DOCUMENT
from events.asyncapi import HEADERS_SCHEMA
from events.catalog.base import Role
from events.catalog.examples import example_events
from events.cloudevents import ENVELOPE_SCHEMA_URI, envelope_json_schema
from events.envelope import Actor
from events.schema_export import DEFAULT_DIRECTORY

COMMAND_CAUSED = "The command that caused it"


def _published_descriptions() -> dict[str, Any]:
    envelope = json.loads((DEFAULT_DIRECTORY / "envelope.cloudevents.json").read_text())
    document = yaml.safe_load(ASYNCAPI_DOCUMENT.read_text(encoding="utf-8"))
    headers = document["components"]["schemas"][HEADERS_SCHEMA]["properties"]
    return {
        "generated": envelope_json_schema()["properties"]["causationid"]["description"],
        ENVELOPE_SCHEMA_URI: envelope["properties"]["causationid"]["description"],
        "asyncapi ce_causationid": headers["ce_causationid"]["description"],
    }


def test_every_event_of_a_command_is_caused_by_the_command() -> None:
    context = CommandContext(Actor("w-ana", Role.CASE_MANAGER), idempotency_key="k1")
    recorded = context.new_events("intake", example_events()[:3])
    assert {new.metadata.causation_id for new in recorded} == {context.command_id("intake")}
    assert context.command_id("intake") not in {new.event_id for new in recorded}


def test_the_published_causationid_is_the_command_that_caused_the_event() -> None:
    descriptions = _published_descriptions()
    assert [
        where for where, text in descriptions.items() if not text.startswith(COMMAND_CAUSED)
    ] == []
    assert "UUID of the command that caused it" in (events.cloudevents.__doc__ or "")
