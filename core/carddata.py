"""Detects card numbers (Luhn-valid runs of 13–19 digits) so that none is accepted or stored: the
one home of the rule, used by the request guard, the log redactor and the at-rest scanner."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator

MIN_DIGITS, MAX_DIGITS = 13, 19

# What may stand between the digit groups of a card number as people (and keyboards, and word
# processors) write it: any whitespace (tabs, no-break and thin spaces, line breaks), any dash
# (hyphen, en/em dash, minus, full-width hyphen) and the invisible joiners a paste can carry.
_WHITESPACE = "".join(chr(code) for code in (
    *range(0x09, 0x0E), *range(0x1C, 0x21), 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
    0x2028, 0x2029, 0x202F, 0x205F, 0x3000))
_DASHES = "-\u00ad\u2010\u2011\u2012\u2013\u2014\u2015\u2043\u2212\ufe58\ufe63\uff0d"
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"
_SEPARATOR_CHARS = _WHITESPACE + _DASHES + _INVISIBLE
# Dots group card numbers too ("4242.4242.4242.4242"), but a dot is also a decimal point and
# "0.123456789012345" is a measurement: dots count only in a card's own grouping of digits.
_DOT_CHARS = ".\u00b7\u2024\uff0e"


def _escaped(chars: str) -> str:
    """Characters as \\uXXXX / \\UXXXXXXXX escapes, which both Python's re and PostgreSQL's
    regular expressions read: the request guard and the at-rest prefilter share one list."""
    return "".join(f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"
                   for char in chars)


# Python's \d is every Unicode decimal digit (category Nd: ASCII, Arabic-Indic, full-width, …).
_DIGIT = r"\d"
_SEP = f"[{_escaped(_SEPARATOR_CHARS)}]"
_DOT = f"[{_escaped(_DOT_CHARS)}]"
# Digit groups, each followed by up to three separator characters ("4242  4242", "42 – 42"),
# not touching other digits; JSON numbers such as 4242424242424242 match as well.
_GROUPED = rf"{_DIGIT}(?:{_SEP}{{0,3}}{_DIGIT}){{12,18}}"
# Dotted: only the card groupings 4-4-4-4, 4-4-4-4-3 (19 digits) and 4-6-4 / 4-6-5 (Diners, Amex).
_DOTTED = (rf"{_DIGIT}{{4}}(?:{_DOT}{_DIGIT}{{4}}){{3}}(?:{_DOT}{_DIGIT}{{3}})?"
           rf"|{_DIGIT}{{4}}{_DOT}{_DIGIT}{{6}}{_DOT}{_DIGIT}{{4,5}}")
_RUN = rf"(?:{_GROUPED}|{_DOTTED})"
_CANDIDATE = re.compile(rf"(?<!{_DIGIT}){_RUN}(?!{_DIGIT})")
# Data at rest is full of hex hashes, base62 ids and decimals ("succeeded in 0.0153901999…s"):
# there a hit must not touch letters, digits or "_" on either side, nor follow a decimal point.
_STANDALONE = re.compile(rf"(?<![\w.]){_RUN}(?!\w)")


@functools.cache
def postgres_prefilter() -> str:
    """For PostgreSQL to pick candidate rows before Python checks them (core.pan_scan): a
    superset of both patterns above (no lookarounds, dots anywhere), with the decimal digits
    spelled out, since PostgreSQL's [[:digit:]] follows the database's locale."""
    codes = [code for code in range(0x20000) if unicodedata.category(chr(code)) == "Nd"]
    ranges, start = [], codes[0]
    for previous, code in zip(codes, [*codes[1:], -1], strict=True):
        if code != previous + 1:  # Nd digits come in contiguous runs of ten
            ranges.append(f"{_escaped(chr(start))}-{_escaped(chr(previous))}")
            start = code
    digit = f"[{''.join(ranges)}]"
    separator = f"[{_escaped(_SEPARATOR_CHARS + _DOT_CHARS)}]"
    return rf"{digit}(?:{separator}{{0,3}}{digit}){{{MIN_DIGITS - 1}}}"


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
    """The run's digits as ASCII ("４２" is 42) when they are a card number."""
    digits = "".join(str(unicodedata.decimal(char)) for char in run if char.isdecimal())
    if MIN_DIGITS <= len(digits) <= MAX_DIGITS and luhn_valid(digits):
        return digits
    return None


# A UUID (8-4-4-4-12 hex digits) is an identifier, never a card number, though its digit groups
# and dashes can spell a Luhn-valid run ("67808968-5303-4edd-…" holds 6780896853034): about one
# uuid4 in 300 did, so merchants' uuid4 Idempotency-Keys and order ids were refused at random.
# One with no letter at all is still scanned: that is a number someone grouped, not a uuid4.
_UUID = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}"
                   r"(?![0-9A-Za-z])")
_HEX_LETTER = re.compile(r"[a-fA-F]")


def _uuids_masked(text: str) -> str:
    """`text` with every UUID that has a hex letter blanked out, character for character, so
    match positions still index the original text."""
    if "-" not in text:
        return text
    return _UUID.sub(lambda match: "u" * len(match.group())
                     if _HEX_LETTER.search(match.group()) else match.group(), text)


def _card_matches(text: str, pattern: re.Pattern[str]) -> Iterator[tuple[re.Match[str], str]]:
    for match in pattern.finditer(_uuids_masked(text)):
        digits = _card_digits(match.group())
        if digits is not None:
            yield match, digits


def card_numbers(text: str, *, standalone: bool = False) -> Iterator[str]:
    """The digits of every card number in `text`. `standalone=True` ignores runs inside words,
    hashes and decimals (for scanning stored data); requests use the stricter default, which
    also refuses a number glued to letters ("card4242…")."""
    for _, digits in _card_matches(text, _STANDALONE if standalone else _CANDIDATE):
        yield digits


def contains_card_number(text: str, *, standalone: bool = False) -> bool:
    return next(card_numbers(text, standalone=standalone), None) is not None


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
    parts, end = [], 0
    for match, _ in _card_matches(text, _CANDIDATE):
        parts += [text[end:match.start()], "[REDACTED_PAN]"]
        end = match.end()
    return "".join(parts) + text[end:]
