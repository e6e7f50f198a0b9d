"""Detects card numbers (Luhn-valid runs of 13–19 digits) so that none is accepted or stored."""

import re

# Digits, optionally grouped by single spaces or dashes ("4242 4242 4242 4242"), not touching
# other digits. JSON numbers such as 4242424242424242 match as well.
_CANDIDATE = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")


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


def contains_card_number(text: str) -> bool:
    for match in _CANDIDATE.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return True
    return False


def redact_card_numbers(text: str) -> str:
    """Replace card-like runs with a marker; used before anything is logged or stored."""

    def _sub(match: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return "[REDACTED_PAN]"
        return match.group()

    return _CANDIDATE.sub(_sub, text)
