"""The README's mechanical claims hold against the code: the RPCs of each service, the settings
read from the environment, the refusal reasons, the catalog's size, the input bounds and the
`casetrail` subcommands. Operators, auditors and the teams subscribing to the catalog read the
README, not the code; these claims drifted before (35 event types documented for 41, RPCs and
settings missing) because nothing checked them."""

from __future__ import annotations

import argparse
import importlib
import re
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import Counter, Gauge, Histogram

from casetrail_platform import limits
from casetrail_platform.grpc_platform.edge import DATED_FIELDS
from casetrail_platform.policy.matrix import REFUSALS, RULES
from casetrail_platform.telemetry.metrics import Metrics
from cli.main import parser as cli_parser
from events.catalog_registry import all_event_types
from services.runner import options_parser as runner_options
from tests.support.refusal_reasons import refusal_reasons

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SERVICES = ("intake", "coordination", "planning", "audit")

SETTING = re.compile(r"\bCASETRAIL_[A-Z0-9_]*[A-Z0-9]\b")
"""A setting's name (a bare prefix such as ``CASETRAIL_TLS_``, which code completes, is not)."""


def section(title: str) -> str:
    """The README's text from the heading ``## title`` to the next heading of that level."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else len(README)]


def table_rows(text: str) -> list[list[str]]:
    """The cells of every row of the Markdown tables in ``text`` (header and rule excluded)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows[1:] if rows else rows


def python_sources(*folders: str) -> str:
    return "\n".join(
        path.read_text(encoding="utf-8")
        for folder in folders
        for path in sorted((ROOT / folder).rglob("*.py"))
    )


def test_every_rpc_of_every_service_is_in_its_row_and_no_other() -> None:
    rows: dict[str, str] = {}
    for row in table_rows(section("The services")):  # the first table: service, API, owns
        if row[0] in SERVICES:
            rows.setdefault(row[0], row[1])
    assert set(rows) == set(SERVICES)
    for service in SERVICES:
        module = importlib.import_module(f"casetrail.{service}.v1.{service}_pb2")
        rpcs = {
            method.name
            for descriptor in module.DESCRIPTOR.services_by_name.values()
            for method in descriptor.methods
        }
        documented = set(re.findall(r"`([A-Z][a-z][A-Za-z]*)`", rows[service]))
        assert documented == rpcs, (
            f"{service}: missing {sorted(rpcs - documented)}, "
            f"not an RPC {sorted(documented - rpcs)}"
        )


def configuration_table() -> set[str]:
    """The settings named in the first column of "Configuration", shorthand expanded:
    ``CASETRAIL_KAFKA_SASL_MECHANISM``, ``_SASL_USERNAME`` names
    ``CASETRAIL_KAFKA_SASL_USERNAME``."""
    named: set[str] = set()
    for row in table_rows(section("Configuration")):
        names = re.findall(r"`([A-Z_][A-Z0-9_]*)`", row[0])
        full = [name for name in names if name.startswith("CASETRAIL_")]
        for name in names:
            if name.startswith("_") and full:
                # The family's prefix: CASETRAIL_KAFKA, CASETRAIL_OIDC, CASETRAIL_TLS.
                named.add("_".join(full[0].split("_")[:2]) + name)
            elif name.startswith("CASETRAIL_"):
                named.add(name)
    return named


def test_every_setting_read_in_code_or_the_chart_is_in_the_configuration_table() -> None:
    read = set(SETTING.findall(python_sources("events", "casetrail_platform", "services", "cli")))
    chart = ROOT / "infra" / "helm" / "casetrail"
    for path in sorted(chart.rglob("*.yaml")) + sorted(chart.rglob("*.tpl")):
        read |= set(SETTING.findall(path.read_text(encoding="utf-8")))
    missing = read - configuration_table()
    assert not missing, f"read but not in the README's configuration table: {sorted(missing)}"


def test_every_setting_in_the_configuration_table_is_read_somewhere() -> None:
    read = set(SETTING.findall(python_sources("events", "casetrail_platform", "services", "cli")))
    read |= set(SETTING.findall(python_sources("tests", "bench")))
    for path in [ROOT / "Makefile", *sorted((ROOT / "infra").rglob("*"))]:
        if path.is_file() and path.suffix in {"", ".sh", ".yaml", ".tpl"}:
            read |= set(SETTING.findall(path.read_text(encoding="utf-8", errors="replace")))
    unread = configuration_table() - read
    assert not unread, f"documented but read nowhere: {sorted(unread)}"


REASONS_PASSED_ON = {
    "services/caseload/recording.py": "audit's reason (or status) for refusing to record a read",
}
"""Where a refusal's reason is another service's, answered as it came: read where it is made."""


def test_every_refusal_reason_is_in_the_readme() -> None:
    reasons = refusal_reasons(
        [
            path
            for folder in ("casetrail_platform", "services")
            for path in sorted((ROOT / folder).rglob("*.py"))
        ],
        ROOT,
    )
    unread = {site for site in reasons.unfollowed if site.split(":")[0] not in REASONS_PASSED_ON}
    assert not unread, f"reasons given by what the test cannot follow to its values: {unread}"
    # Each way a reason is given is read: a rule, a credential's, the mapping's, a class's.
    assert {"BUDGET_EXCEEDED", "TOKEN_EXPIRED", "INTERNAL_ERROR", "NOT_THE_PROVIDER"} <= (
        reasons.found
    )
    missing = {reason for reason in reasons.found if not re.search(rf"\b{reason}\b", README)}
    assert not missing, f"reasons the README never names: {sorted(missing)}"


GIVING_REASONS = """
class RuleBroken(Exception): ...
class NotAllowed(Exception): ...
TOPIC = "DEFAULT_TOPIC"
PROTOCOL = "SASL_SSL"
LINE_EMPTY = "LINE_EMPTY"
TABLE = ((KeyError, "BY_TABLE", "words"),)
class Mine(RuleBroken):
    def __init__(self) -> None:
        super().__init__("BY_SUPER", "words")
class Other(NotAllowed):
    reason = "by-class".upper().replace("-", "_")
def check(subject: str, rule: str) -> None:
    raise RuleBroken(rule, f"{subject} breaks it")
def use() -> None:
    check("line", errors.LINE_EMPTY)
def each(error: Exception) -> None:
    for kind, reason, words in TABLE:
        raise InvalidCredential(reason, words)
def unknown(found: object) -> None:
    raise RuleBroken(str(found), "words")
"""


def test_the_reasons_are_read_where_they_are_given_not_from_any_constant(tmp_path: Path) -> None:
    source = tmp_path / "giving.py"
    source.write_text(GIVING_REASONS, encoding="utf-8")
    reasons = refusal_reasons([source], tmp_path)
    assert reasons.found == {"BY_TABLE", "BY_SUPER", "BY_CLASS", "LINE_EMPTY"}
    assert reasons.unfollowed == ["giving.py:21"]


def test_the_number_of_event_types() -> None:
    """The catalog's types beside audit's alarm, ``casetrail.ledger.inconsistency_detected``."""
    found = re.search(
        r"(\d+) event types cover the cycle", section("The event catalog (public contract)")
    )
    assert found is not None
    assert int(found.group(1)) == len(all_event_types()) - 1


@pytest.mark.parametrize(
    ("row", "text"),
    [
        ("ids (", f"at most {limits.MAX_ID_CHARS} characters"),
        ("idempotency key", f"1-{limits.MAX_KEY_CHARS} characters"),
        ("page token", f"at most {limits.MAX_TOKEN_CHARS} characters"),
        ("names, codes, free text", f"at most {limits.MAX_TEXT_CHARS:,} characters"),
        ("lists", f"at most {limits.MAX_LIST_ITEMS} items"),
        ("one stored event", f"{limits.MAX_EVENT_BYTES // 1024} KiB"),
        (
            "any timestamp or date",
            f"{limits.EARLIEST_MOMENT:%Y-%m-%d}"
            f" to {limits.LATEST_MOMENT - timedelta(days=1):%Y-%m-%d}",
        ),
        (
            "a command's `occurred_at`",
            f"from {limits.EARLIEST_OCCURRED_AT:%Y-%m-%d} up to now"
            f" ({limits.OCCURRED_AT_CLOCK_SKEW // timedelta(minutes=1)} minutes",
        ),
        (
            "a scheduled, rescheduled or delivered service",
            f"at most {limits.MAX_SERVICE_DURATION // timedelta(hours=1)} hours long, starting"
            f" within {limits.SERVICE_WINDOW_REACH.days // 366} years",
        ),
        (
            "reservations on one budget line",
            f"at most {limits.MAX_RESERVATIONS_PER_SERVICE} for one service (its first and its"
            f" top-ups, when its cost grows) and {limits.MAX_RESERVATIONS_PER_CASE} for one case",
        ),
    ],
)
def test_the_limits_table_states_the_limits_of_the_code(row: str, text: str) -> None:
    rows = [
        cells
        for cells in table_rows(section("Limits and hostile input"))
        if cells[0].startswith(row)
    ]
    assert len(rows) == 1, row
    assert text in rows[0][1]


def test_the_limits_table_names_every_dated_field_of_the_edge() -> None:
    (row,) = (
        cells
        for cells in table_rows(section("Limits and hostile input"))
        if cells[0].startswith("any timestamp or date")
    )
    listed = row[1].split("a day (", 1)[1].split(": the edge's `DATED_FIELDS`", 1)[0]
    assert set(re.findall(r"`([a-z_]+)`", listed)) == DATED_FIELDS


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {
        name: command
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name, command in action.choices.items()
    }


def options(parser: argparse.ArgumentParser) -> set[str]:
    """A command's options and those of its own subcommands (``ledger prove --tree-size``)."""
    found = {option for action in parser._actions for option in action.option_strings}
    for command in subcommands(parser).values():
        found |= options(command)
    return found


def usage_block() -> str:
    return section("The `casetrail` command").split("```sh\n", 1)[1].split("```", 1)[0]


def test_every_casetrail_subcommand_is_in_the_usage_block_and_no_other() -> None:
    block = usage_block()
    documented = {
        name
        for names in re.findall(r"^casetrail ([a-z|-]+)", block, re.MULTILINE)
        for name in names.split("|")
    }
    assert documented == set(subcommands(cli_parser()))


def test_every_option_in_the_usage_block_is_one_of_its_command() -> None:
    # `casetrail serve` hands its options to the runner, whose parser holds them.
    commands = {**subcommands(cli_parser()), "serve": runner_options()}
    for line in usage_block().splitlines():
        if not line.startswith("casetrail "):
            continue
        usage = line.split("#", 1)[0]  # the comment may name other commands' options
        given = set(re.findall(r"(?<![\w-])(--[a-z-]+|-[a-zA-Z])\b", usage))
        for name in usage.split()[1].split("|"):
            unknown = given - options(commands[name])
            assert not unknown, f"casetrail {name}: no option {sorted(unknown)}"


def test_the_metrics_table_lists_every_metric_with_its_type_and_labels() -> None:
    documented: dict[str, tuple[str, set[str]]] = {}
    for cells in table_rows(section("Observability")):
        labels = set(re.findall(r"`([a-z_]+)`", cells[2]))
        for name in re.findall(r"`(casetrail_[a-z_]+)`", cells[0]):
            documented[name] = (cells[1], labels)
    exported: dict[str, tuple[str, set[str]]] = {}
    for metric in vars(Metrics()).values():
        if isinstance(metric, Counter | Gauge | Histogram):
            kind = metric._type  # prometheus_client's own: "counter", "gauge", "histogram"
            name = metric._name + ("_total" if kind == "counter" else "")
            exported[name] = (kind, set(metric._labelnames))
    assert set(documented) == set(exported)
    for name, (kind, labels) in exported.items():
        assert documented[name] == (kind, labels), name


def test_every_file_the_readme_names_exists() -> None:
    """A path in backquotes with an extension; one relative to the section's folder
    (``static/integrity.js`` of the console) exists below some folder of the repository; the
    data directory (``var/``) is made at run time."""
    named = set(re.findall(r"`([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+\.[a-z]{2,5})`", README))
    missing = {
        path
        for path in named
        if not path.startswith("var/")
        and not (ROOT / path).exists()
        and not any(
            (ROOT / top / path).exists() or any((ROOT / top).glob(f"**/{path}"))
            for top in ("services", "infra", "casetrail_platform", "events")
        )
    }
    assert not missing, f"the README names files that do not exist: {sorted(missing)}"


def test_the_access_matrix_table_is_the_policys_rules_in_order_and_names_every_refusal() -> None:
    text = section("Security model: who can see what")
    documented = [cells[0].strip("`") for cells in table_rows(text.split("\n\n`tests/", 1)[0])]
    assert documented == [rule.name for rule in RULES]  # the first rule that holds decides
    for refusal in REFUSALS:
        assert f"`{refusal.upper().replace('-', '_')}`" in text, refusal


def test_every_rule_a_decision_names_is_in_the_readme() -> None:
    # Auditors meet them in x-casetrail-access-rule and in the access records.
    names = set(
        re.findall(r'Decision\(\s*True,\s*"([a-z-]+)"', python_sources("casetrail_platform"))
    )
    assert names, "the pattern no longer finds the policy's decisions"
    missing = {name for name in names if f"`{name}`" not in README}
    assert not missing, f"rules the README never names: {sorted(missing)}"


def test_the_exit_statuses_of_casetrail_help_are_the_readmes() -> None:
    from cli.main import EXIT_STATUSES

    documented = [
        row[0] for row in table_rows(section("The `casetrail` command")) if row[0].isdigit()
    ]
    assert documented == re.findall(r"^  (\d+) ", EXIT_STATUSES, re.MULTILINE)
    assert documented == ["0", "1", "2", "3", "130", "141"]
