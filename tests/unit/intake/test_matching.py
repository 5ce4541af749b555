from __future__ import annotations

import sys
import unicodedata
from datetime import date

import pytest

from events.catalog.clients import PersonalIdentifier, PersonName
from services.intake.domain import matching
from services.intake.domain.matching import (
    KnownClient,
    Probe,
    candidates,
    compare,
    fold,
    identifier_key,
    name_key,
)

BIRTH = date(1941, 6, 2)
NATIONAL = PersonalIdentifier(scheme="national_id", value="BLLMRC41H02F205X")


def known(
    client_id: str,
    given: str = "Marco",
    family: str | None = "Bellini",
    birth: date | None = BIRTH,
    identifiers: tuple[PersonalIdentifier, ...] = (),
    position: int = 1,
) -> KnownClient:
    return KnownClient(
        client_id, PersonName(given_names=given, family_name=family), birth, identifiers, position
    )


def probe(
    given: str = "Marco",
    family: str | None = "Bellini",
    birth: date | None = BIRTH,
    identifiers: tuple[PersonalIdentifier, ...] = (),
) -> Probe:
    return Probe(PersonName(given_names=given, family_name=family), birth, identifiers)


@pytest.mark.parametrize(
    ("typed", "folded"),
    [
        ("  Zoë   DUPONT ", "zoe dupont"),
        ("Ångström", "angstrom"),
        ("José\tMaría", "jose maria"),
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),
        # Letters without a decomposition, and invisible format characters (rev21).
        ("Łukasz Wałęsa", "lukasz walesa"),
        ("Søren Ærø", "soren aero"),
        ("Đorđe Œuvray", "dorde oeuvray"),
        ("Zoe\u00a0Du\u200bpont", "zoe dupont"),
        ("\u2060Anna\ufeff", "anna"),
        # Default-ignorable marks and letters, which show nothing either (rev-intake D).
        ("Giu\u034flia", "giulia"),
        ("Giu\ufe00lia\ufe0f", "giulia"),
        ("Giu\U000e0100lia", "giulia"),
        ("Giu\u180blia\u180f", "giulia"),
        ("\u115fGiu\u1160lia\u3164\uffa0", "giulia"),
        # Control characters, C1 ones from text decoded as Latin-1 among them (rev-intake).
        ("Mar\u0080co", "marco"),
        ("\u009fMarco\u0085", "marco"),
        ("Mar\x1fco\x7f", "marco"),
    ],
)
def test_fold_ignores_case_accents_and_whitespace(typed: str, folded: str) -> None:
    assert fold(typed) == folded


def test_an_identifier_is_keyed_as_typed_less_invisible_characters() -> None:
    """None is accepted in one now (``check_matchable``); one stored before would hide the
    client it names."""
    for typed in ("BLLMRC41H02F205X\u0081", "BLL\u200bMRC41H02F205X", "\x1fBLLMRC41H02F205X"):
        stored = PersonalIdentifier(scheme=NATIONAL.scheme, value=typed)
        assert identifier_key(stored) == identifier_key(NATIONAL)
    spaced = PersonalIdentifier(scheme=NATIONAL.scheme, value="BLLMRC41H02 F205X")
    assert identifier_key(spaced) != identifier_key(NATIONAL)


def test_name_key_needs_a_date_of_birth() -> None:
    assert name_key(PersonName(given_names="Marco"), None) is None
    assert name_key(None, BIRTH) is None


def test_same_folded_name_and_birth_date_match() -> None:
    match = compare(probe(given="marco ", family="BELLÌNI"), known("c1"))
    assert match is not None
    assert match.same_name_and_date_of_birth
    assert match.shared_identifiers == ()


def test_same_name_with_another_birth_date_is_someone_else() -> None:
    assert compare(probe(birth=date(1941, 6, 3)), known("c1")) is None


def test_names_without_birth_dates_never_match() -> None:
    assert compare(probe(birth=None), known("c1", birth=None)) is None


def test_given_and_family_names_are_not_interchangeable() -> None:
    assert compare(probe(given="Bellini", family="Marco"), known("c1")) is None


def test_an_identical_identifier_matches_whatever_the_name() -> None:
    match = compare(
        probe(given="Anna", family="Rossi", birth=None, identifiers=(NATIONAL,)),
        known("c1", identifiers=(NATIONAL,)),
    )
    assert match is not None
    assert not match.same_name_and_date_of_birth
    assert match.shared_identifiers == (NATIONAL,)


def test_the_same_value_under_another_scheme_is_not_the_same_identifier() -> None:
    passport = PersonalIdentifier(scheme="passport", value=NATIONAL.value)
    assert (
        compare(probe(given="Anna", identifiers=(passport,)), known("c1", identifiers=(NATIONAL,)))
        is None
    )


def test_candidates_are_in_registration_order_without_repeats() -> None:
    clients = [
        known("late", identifiers=(NATIONAL,), position=9),
        known("early", position=2),
        known("late", identifiers=(NATIONAL,), position=9),
        known("other", given="Luca", position=5),
    ]
    found = candidates(probe(identifiers=(NATIONAL,)), clients)
    assert [c.client_id for c in found] == ["early", "late"]


def test_candidates_as_a_retry_sees_them() -> None:
    clients = [known("before", position=2), known("itself", position=4), known("after", position=6)]
    found = candidates(probe(), clients, excluding="itself", registered_before=4)
    assert [c.client_id for c in found] == ["before"]


def test_invisible_characters_are_told_apart_by_their_definition_at_every_code_point() -> None:
    """``visible`` drops, at C speed, exactly the characters the definition names (Cf; Cc but
    tab, line feed and carriage return; the default-ignorable code points): checked one
    character at a time in Python, keying a lookup's long identifiers held intake's event loop
    for over 20 s (bench/matching_bench.py measures it)."""
    ignorable = {
        point for first, last in matching._DEFAULT_IGNORABLE for point in range(first, last + 1)
    }
    every = "".join(
        chr(point) for point in range(sys.maxunicode + 1) if not 0xD800 <= point < 0xE000
    )
    expected = "".join(
        char
        for char in every
        if not (
            unicodedata.category(char) == "Cf"
            or (unicodedata.category(char) == "Cc" and char not in "\t\n\r")
            or ord(char) in ignorable
        )
    )
    assert matching.visible(every) == expected
