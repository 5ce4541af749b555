"""When two registrations may be the same person.

A possible duplicate shares the folded family and given names *and* the date of birth, or any
identical identifier (scheme and value). Names alone are never enough: namesakes are common,
and a client without a date of birth is only matched by identifiers.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from casetrail_platform.commands import InvalidCommand
from events.catalog.clients import PersonalIdentifier, PersonName
from events.errors import FieldProblem

_SEPARATOR = "\x1f"
"""Cannot occur in a name or identifier typed by a person, so joined keys never collide."""


_LATIN_LETTERS = str.maketrans(
    {
        "ł": "l",
        "ø": "o",
        "đ": "d",
        "ð": "d",
        "æ": "ae",
        "œ": "oe",
        "þ": "th",
        "\u0131": "i",  # dotless i, written escaped: it reads as a plain i
        "ħ": "h",
        "ŧ": "t",
    }
)
"""Letters NFKD does not decompose into a base letter and an accent (after casefold): a
keyboard without them types "Lukasz Walesa" for "Łukasz Wałęsa", "Soren" for "Søren"."""


_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
"""Unicode's default-ignorable code points (DerivedCoreProperties.txt,
Default_Ignorable_Code_Point), which a text shows nothing of: besides format characters
(category Cf), the combining grapheme joiner U+034F and the variation selectors (marks of
combining class 0, which ``unicodedata.combining`` does not tell apart from letters), the
Mongolian free variation selectors and the Hangul fillers (letters)."""


_TYPED_WHITESPACE = frozenset("\t\n\r")
"""The control characters a person types (and the edge lets through in text): whitespace."""


@functools.cache
def _invisible_characters() -> re.Pattern[str]:
    """Every invisible character (``invisible``), as one character class: matched and dropped
    at C speed. Built once, at first use (the category of every code point, about 0.2 s).
    Checked character by character in Python instead, keying the identifiers of a lookup's
    candidates (50, each sharing 100 identifiers of 500 characters) held the service's event
    loop for over 20 s."""
    points = {point for first, last in _DEFAULT_IGNORABLE for point in range(first, last + 1)}
    points.update(
        point
        for point in range(sys.maxunicode + 1)
        if unicodedata.category(chr(point)) in ("Cf", "Cc")
    )
    points.difference_update(map(ord, _TYPED_WHITESPACE))
    ranges: list[list[int]] = []
    for point in sorted(points):
        if ranges and ranges[-1][1] == point - 1:
            ranges[-1][1] = point
        else:
            ranges.append([point, point])
    return re.compile(
        "["
        + "".join(f"{re.escape(chr(first))}-{re.escape(chr(last))}" for first, last in ranges)
        + "]"
    )


def invisible(char: str) -> bool:
    """Whether ``char`` shows nothing in a text: a format character (category Cf, a zero-width
    space pasted from a document), a control character (category Cc, a C1 one from text decoded
    as Latin-1) but tab, line feed and carriage return, or another default-ignorable code
    point."""
    return _invisible_characters().fullmatch(char) is not None


def visible(text: str) -> str:
    """``text`` less its invisible characters (``invisible``)."""
    return _invisible_characters().sub("", text)


def fold(text: str) -> str:
    """Case, accents and whitespace folded: " Zoë  DUPONT" and "zoe dupont" are equal; so are
    "Łukasz" and "Lukasz". Invisible characters (``invisible``) are dropped, so they cannot
    hide a duplicate."""
    decomposed = visible(unicodedata.normalize("NFKD", text))
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join(bare.casefold().translate(_LATIN_LETTERS).split())


def name_key(name: PersonName | None, date_of_birth: date | None) -> str | None:
    """Key of the name-and-birth-date rule; ``None`` when the name or birth date is unknown."""
    if name is None or date_of_birth is None:
        return None
    return _SEPARATOR.join(
        (fold(name.family_name or ""), fold(name.given_names), date_of_birth.isoformat())
    )


def identifier_key(identifier: PersonalIdentifier) -> str:
    """The identifier as typed, less invisible characters: none is accepted in one now
    (``check_matchable``), and one stored before (a zero-width space or a C1 control pasted
    with it) would hide the client it names."""
    return f"{identifier.scheme}{_SEPARATOR}{visible(identifier.value)}"


@dataclass(frozen=True, slots=True)
class Probe:
    """The identity details a registration would record (a search may leave the name out)."""

    name: PersonName | None
    date_of_birth: date | None
    identifiers: tuple[PersonalIdentifier, ...]

    @property
    def name_key(self) -> str | None:
        return name_key(self.name, self.date_of_birth)

    @property
    def identifier_keys(self) -> tuple[str, ...]:
        return tuple(identifier_key(identifier) for identifier in self.identifiers)


def check_matchable(probe: Probe) -> None:
    """Refuse identity details that would slip past matching: a name with nothing visible in it
    (it folds to nothing), an identifier holding an invisible character (``invisible``: a
    zero-width space or a C1 control pasted with one; matched as typed, it hid the client the
    identifier names, and no one could type it back). The values themselves are never repeated
    (personal data)."""
    problems: list[FieldProblem] = []
    if probe.name is not None:
        for field in ("given_names", "family_name"):
            text = getattr(probe.name, field)
            if text is not None and not fold(text):
                problems.append(FieldProblem(f"name.{field}", "must contain a visible letter"))
    for index, identifier in enumerate(probe.identifiers):
        if visible(identifier.value) != identifier.value:
            problems.append(
                FieldProblem(
                    f"identifiers[{index}].value",
                    "must not contain invisible characters (such as a zero-width space, a"
                    " variation selector or a control character)",
                )
            )
    if problems:
        raise InvalidCommand(problems)


@dataclass(frozen=True, slots=True)
class KnownClient:
    """A registered client as the duplicate check sees it."""

    client_id: str
    name: PersonName
    date_of_birth: date | None
    identifiers: tuple[PersonalIdentifier, ...]
    position: int
    """Where its registration sits in intake's store: tells who was registered first."""


@dataclass(frozen=True, slots=True)
class DuplicateCandidate:
    client_id: str
    name: PersonName
    date_of_birth: date | None
    same_name_and_date_of_birth: bool
    shared_identifiers: tuple[PersonalIdentifier, ...]


@dataclass(frozen=True, slots=True)
class FoundCandidates:
    """A duplicate lookup's answer."""

    candidates: tuple[DuplicateCandidate, ...]
    """In registration order."""
    truncated: bool = False
    """A match key, or the probe's keys together, named more clients than a lookup answers
    (the directory's ``CANDIDATES_PER_KEY``, ``CANDIDATES_PER_LOOKUP``): only the most
    recently registered are among ``candidates``."""


def compare(probe: Probe, known: KnownClient) -> DuplicateCandidate | None:
    """Why ``known`` may be the person described by ``probe``, or ``None`` if it is not."""
    probe_key = probe.name_key
    same_name = probe_key is not None and probe_key == name_key(known.name, known.date_of_birth)
    theirs = {identifier_key(identifier) for identifier in known.identifiers}
    shared = tuple(i for i in probe.identifiers if identifier_key(i) in theirs)
    if not same_name and not shared:
        return None
    return DuplicateCandidate(
        client_id=known.client_id,
        name=known.name,
        date_of_birth=known.date_of_birth,
        same_name_and_date_of_birth=same_name,
        shared_identifiers=shared,
    )


def candidates(
    probe: Probe,
    known: Iterable[KnownClient],
    *,
    excluding: str | None = None,
    registered_before: int | None = None,
) -> list[DuplicateCandidate]:
    """Every known client that may be the probe's person, in registration order.

    ``excluding`` and ``registered_before`` let a retried registration see exactly the clients
    its first attempt saw: those registered before it, not itself.
    """
    found: dict[str, tuple[int, DuplicateCandidate]] = {}
    for client in known:
        if client.client_id == excluding:
            continue
        if registered_before is not None and client.position >= registered_before:
            continue
        match = compare(probe, client)
        if match is not None:
            found[client.client_id] = (client.position, match)
    return [match for _, match in sorted(found.values(), key=lambda item: item[0])]
