"""`casetrail serve` takes exactly the runner's options, parsed by the runner itself."""

from __future__ import annotations

from unittest import mock

import pytest

from cli import main as cli
from services import runner


def test_serve_hands_every_option_to_the_runner_parser() -> None:
    argv = ["--backend", "distributed", "--metrics-address", "off", "--health-port", "7001"]
    with mock.patch.object(runner, "main") as started, pytest.raises(SystemExit) as stop:
        cli.main(["serve", *argv])
    assert stop.value.code == 0
    started.assert_called_once_with(argv)
    parsed = runner.parse(argv)
    assert (parsed.metrics_address, parsed.health_port) == ("off", 7001)


def test_serve_help_is_the_runner_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["serve", "--help"])
    assert stop.value.code == 0
    assert "--health-port" in capsys.readouterr().out


def test_other_commands_still_refuse_unknown_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["timeline", "case-1", "--health-port", "7001"])
    assert stop.value.code == 2
    assert "unrecognized arguments: --health-port 7001" in capsys.readouterr().err
