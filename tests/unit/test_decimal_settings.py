"""Numbers with a decimal point that operators type (seconds, hours, minutes) are read by one
rule (``typed_numbers.ascii_decimal``), as whole numbers are (``test_topic_settings``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest

from casetrail_platform.identity.settings import IssuerSettings
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.ledger.hosting import ledger_settings
from casetrail_platform.typed_numbers import ascii_decimal
from cli.main import finite
from services.intake.bootstrap import REVIEW_HOURS_SETTING, emergency_review_within

ISSUER = {"CASETRAIL_OIDC_ISSUER": "https://login.agency.org", "CASETRAIL_OIDC_AUDIENCE": "a"}


def _keys_max_age(environ: dict[str, str]) -> object:
    return IssuerSettings.from_env(ISSUER | environ)


def _sign_every(environ: dict[str, str]) -> object:
    return ledger_settings(Infrastructure(data_dir=Path()), environ)


def _review_hours(environ: dict[str, str]) -> object:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environ.items():
            patch.setenv(name, value)
        return emergency_review_within()


DECIMAL_SETTINGS: list[tuple[str, str, Callable[[dict[str, str]], object]]] = [
    ("CASETRAIL_OIDC_KEYS_MAX_AGE", "3600.5", _keys_max_age),
    ("CASETRAIL_LEDGER_SIGN_EVERY", ".5", _sign_every),
    (REVIEW_HOURS_SETTING, "1.5", _review_hours),
]

UNREAD = ["\u0661\u0662", "1_000", " 3600", "3600 ", "1e3", "nan", "inf", "-1", "1.", "0x10"]
"""Each of these ``float`` read, as 12, 1000, 3600, 3600, 1000, nan and inf (the last two then
refused only by each reader's own range check); the rest are no decimal number either."""


@pytest.mark.parametrize(("name", "good", "read"), DECIMAL_SETTINGS)
@pytest.mark.parametrize("value", UNREAD)
def test_a_decimal_setting_is_ascii_digits_and_one_point_or_refused_naming_its_variable(
    name: str, good: str, read: Callable[[dict[str, str]], object], value: str
) -> None:
    read({name: good})
    with pytest.raises(ValueError, match=name):
        read({name: value})


def test_a_cli_decimal_argument_is_read_by_the_same_rule() -> None:
    parse = finite(0.0, 1440.0, above=True)
    assert parse("0.25") == 0.25
    for value in [*UNREAD, "0", "1441"]:
        with pytest.raises(argparse.ArgumentTypeError, match="must be a number more than 0"):
            parse(value)


def test_ascii_decimal_reads_digits_with_at_most_one_point() -> None:
    assert [ascii_decimal(text) for text in ("72", "0.5", ".5", "1" * 18)] == [
        72.0,
        0.5,
        0.5,
        float("1" * 18),
    ]
    assert [ascii_decimal(text) for text in ("", ".", "1.2.3", "1" * 19)] == [None] * 4
