"""Whole numbers set in the environment: ASCII digits, read by one helper, so that a bad value
is refused naming its variable."""

from __future__ import annotations

from collections.abc import Mapping

MAX_DIGITS = 18
"""More than any setting's bound needs (below 2**63): ``int`` refuses text of over 4,300
digits with a message naming no variable."""


def ascii_whole_number(text: str) -> int | None:
    """The number ``text`` spells in ASCII digits (at most ``MAX_DIGITS``), else ``None``:
    ``str.isdigit`` also holds of "²", which ``int`` then refused with "invalid literal for
    int()", naming no variable, and of "١٢", which ``int`` reads as 12; ``int`` also reads
    "7_301" as 7301 and " 7" as 7. Every whole number an operator or a caller types (settings,
    CLI arguments, web queries) is read by this one rule."""
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_DIGITS:
        return None
    return int(text)


def whole_number(environ: Mapping[str, str], name: str, default: int) -> int:
    """The whole number in variable ``name``; ``default`` when unset or empty; ``ValueError``
    naming the variable for anything but ASCII digits."""
    text = environ.get(name, "").strip()
    if not text:
        return default
    number = ascii_whole_number(text)
    if number is None:
        raise ValueError(f"{name} must be a whole number, got {text!r}")
    return number
