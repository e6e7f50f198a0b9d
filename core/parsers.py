"""Strict JSON request bodies: UTF-8, one object at the top, bounded nesting and numbers, no
duplicate keys, no NUL or lone surrogates. Anything else is a 400 `invalid_json`, never a 500."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import IO, Any

from rest_framework.parsers import BaseParser

from core.carddata import redact_card_numbers
from core.errors import InvalidRequest, UnsupportedMediaType

MEDIA_TYPE = "application/json"
# Our deepest legitimate body is an object of objects (metadata, evidence); 32 leaves room and
# keeps the recursive C decoder far from Python's recursion limit.
MAX_DEPTH = 32
# A 64-bit integer has at most 19 digits; amounts stop at 11. Longer ones are refused before
# int() is asked to convert them.
MAX_INTEGER_DIGITS = 19
# Strings and brackets, in one linear pass: brackets inside strings do not count as nesting. An
# unterminated string runs to the end (the decoder then refuses it), so no quote is rescanned.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SAFE_PARAM = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,64}")


def _invalid(message: str, *, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_json", param=param)


def _check_depth(text: str) -> None:
    depth = 0
    for token in _TOKENS.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise _invalid(f"The JSON body is nested more than {MAX_DEPTH} levels deep.")
        elif char in "]}":
            depth -= 1


def _parse_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise _invalid(f"A number in the JSON body has more than {MAX_INTEGER_DIGITS} digits.")
    return int(literal)


def _parse_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _invalid(f"A number in the JSON body is too large ({literal[:20]}…).")
    return value


def _parse_constant(name: str) -> float:
    raise _invalid(f"{name} is not a JSON number.")


def _display(key: str) -> str | None:
    key = redact_card_numbers(key)
    return key if _SAFE_PARAM.fullmatch(key) else None


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # Which of two values a client meant is a guess, and a proxy or signature checker
            # may pick the other: refuse rather than keep the last one silently.
            shown = _display(key)
            raise _invalid(
                f"The JSON body has a duplicate key {shown!r} in one object." if shown else
                "The JSON body has a duplicate key in one object.", param=shown)
        result[key] = value
    return result


def _check_strings(value: Any) -> None:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            found = _UNSTORABLE.search(item)
            if found:
                what = "a NUL character (\\u0000)" if found.group() == "\x00" else (
                    "an unpaired surrogate (\\ud800-\\udfff)")
                raise _invalid(f"A string in the JSON body contains {what}, which cannot be "
                               "stored.")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def check_content_type(content_type: str) -> None:
    """JSON is UTF-8 (RFC 8259): `application/json`, with no charset or `charset=utf-8`."""
    media_type, _, params = content_type.partition(";")
    if media_type.strip().lower() != MEDIA_TYPE:
        raise UnsupportedMediaType("Send the body as application/json.")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
                "utf-8", "utf8"):
            raise UnsupportedMediaType("JSON bodies are UTF-8; send charset=utf-8 or none.")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The one strict decoder, used by the request guard and by DRF (StrictJSONParser)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("The request body is not valid UTF-8.") from None
    _check_depth(text)
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_int=_parse_int,
                           parse_float=_parse_float, parse_constant=_parse_constant)
    except (ValueError, RecursionError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "malformed"
        raise _invalid(f"The request body is not valid JSON: {detail}.") from None
    if not isinstance(value, Mapping):
        raise _invalid("The request body must be a JSON object.")
    _check_strings(value)
    return value


class StrictJSONParser(BaseParser):
    """DRF's parser for application/json, through `parse_json_object`. The request guard has
    usually decoded the body already; its result is reused rather than parsed twice."""

    media_type = MEDIA_TYPE

    def parse(self, stream: IO[bytes], media_type: str | None = None,
              parser_context: Mapping[str, Any] | None = None) -> dict[str, Any]:
        request = (parser_context or {}).get("request")
        decoded = getattr(getattr(request, "_request", None), "json_body", None)
        if decoded is not None:
            return decoded
        check_content_type(media_type or MEDIA_TYPE)
        return parse_json_object(stream.read() if stream is not None else b"")
