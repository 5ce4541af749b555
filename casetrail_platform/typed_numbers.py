"""Numbers an operator or a caller types (settings, CLI arguments, web queries): ASCII digits,
read by one helper each for whole and decimal numbers, so that a bad value is refused naming its
variable or argument."""

from __future__ import annotations

import re
from collections.abc import Mapping

MAX_DIGITS = 18
"""More than any setting's bound needs (below 2**63): ``int`` refuses text of over 4,300
digits with a message naming no variable."""


def ascii_whole_number(text: str, max_digits: int = MAX_DIGITS) -> int | None:
    """The number ``text`` spells in ASCII digits (at most ``max_digits``), else ``None``:
    ``str.isdigit`` also holds of "²", which ``int`` then refused with "invalid literal for
    int()", naming no variable, and of "١٢", which ``int`` reads as 12; ``int`` also reads
    "7_301" as 7301 and " 7" as 7. Every whole number an operator or a caller types (settings,
    CLI arguments, web queries) is read by this one rule."""
    if not (text.isascii() and text.isdigit()) or len(text) > max_digits:
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


_DIGITS = f"[0-9]{{1,{MAX_DIGITS}}}"
_DECIMAL = re.compile(rf"{_DIGITS}(?:\.{_DIGITS})?|\.{_DIGITS}")


def ascii_decimal(text: str) -> float | None:
    """The number ``text`` spells as ASCII digits with at most one decimal point ("0.5", ".5",
    "72"), else ``None``. ``float`` also reads "١٢" as 12, "1_0" as 10, " 3 " as 3, "1e3" and
    "nan" and "inf": a setting read by it took another script's digits, and every caller had to
    remember to refuse nan (whose comparisons are all false) on its own."""
    if _DECIMAL.fullmatch(text) is None:
        return None
    return float(text)
