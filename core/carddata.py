"""Detects card numbers (Luhn-valid runs of 13–19 digits) so that none is accepted or stored: the
one home of the rule, used by the request guard, the log redactor and the at-rest scanner."""

from __future__ import annotations

import re
from collections.abc import Iterator

# Digits, optionally grouped by single spaces or dashes ("4242 4242 4242 4242"), not touching
# other digits. JSON numbers such as 4242424242424242 match as well.
_DIGIT_RUN = r"[0-9](?:[ -]?[0-9]){12,18}"
_CANDIDATE = re.compile(rf"(?<![0-9]){_DIGIT_RUN}(?![0-9])")
# Data at rest is full of hex hashes, base62 ids and decimals ("succeeded in 0.0153901999…s"):
# there a hit must not touch letters, digits or "_" on either side, nor follow a decimal point.
_STANDALONE = re.compile(rf"(?<![0-9A-Za-z_.]){_DIGIT_RUN}(?![0-9A-Za-z_])")
_SEPARATORS = re.compile(r"[ -]")
MIN_DIGITS, MAX_DIGITS = 13, 19


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card_digits(run: str) -> str | None:
    digits = _SEPARATORS.sub("", run)
    if MIN_DIGITS <= len(digits) <= MAX_DIGITS and luhn_valid(digits):
        return digits
    return None


def card_numbers(text: str, *, standalone: bool = False) -> Iterator[str]:
    """The digits of every card number in `text`. `standalone=True` ignores runs inside words,
    hashes and decimals (for scanning stored data); requests use the stricter default, which
    also refuses a number glued to letters ("card4242…")."""
    pattern = _STANDALONE if standalone else _CANDIDATE
    for match in pattern.finditer(text):
        digits = _card_digits(match.group())
        if digits is not None:
            yield digits


def contains_card_number(text: str) -> bool:
    return next(card_numbers(text), None) is not None


def contains_card_data(value: object) -> bool:
    """A decoded JSON value, or query parameters as (name, value) pairs: every string, every
    object key and every number at any depth. Iterative, so nesting depth cannot exhaust the
    stack (the parser bounds it anyway)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if contains_card_number(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            # A longer run of digits is no card number, and str() of a huge int is costly.
            if abs(item) < 10**MAX_DIGITS and contains_card_number(str(item)):
                return True
        elif isinstance(item, float) and abs(item) < 10**MAX_DIGITS and contains_card_number(
                f"{item:.0f}" if item.is_integer() else repr(item)):
            # 4.242424242424242e15 is the card number 4242424242424242 written as a float.
            return True
    return False


def redact_card_numbers(text: str) -> str:
    """Replace card-like runs with a marker; used before anything is logged or stored."""

    def _sub(match: re.Match[str]) -> str:
        return "[REDACTED_PAN]" if _card_digits(match.group()) is not None else match.group()

    return _CANDIDATE.sub(_sub, text)
