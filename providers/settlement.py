"""Reading settlement files: what every provider's format shares. Each adapter module declares
its own columns and how a line's values become a `SettlementRow` (its `parse_settlement`)."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from operator import itemgetter

from core.money import CURRENCIES, MAX_AMOUNT, exponent
from providers.base import MalformedLine, SettlementRow

CAPTURE, REFUND = "capture", "refund"  # SettlementRow.type


def split(raw: str, delimiter: str) -> list[str]:
    # The fast path covers every line the providers write; quoted fields take the csv module.
    if '"' not in raw:
        return raw.split(delimiter)
    return next(csv.reader([raw], delimiter=delimiter))


def read_currency(value: str) -> str:
    currency = value.strip().lower()
    if currency not in CURRENCIES:
        raise MalformedLine(f"unknown currency {value!r}")
    return currency


def read_int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise MalformedLine(f"{name} {value!r} is not an integer") from None


def decimal_minor(value: str, currency: str, name: str) -> int:
    """'-25.00' brl → -2500; refuses more decimals than the currency has."""
    try:
        minor = Decimal(value).scaleb(exponent(currency))
    except InvalidOperation:
        raise MalformedLine(f"{name} {value!r} is not a decimal amount") from None
    if minor != minor.to_integral_value():
        raise MalformedLine(f"{name} {value!r} has more decimals than {currency} allows")
    return int(minor)


def scaled_minor(value: int, scale: int, currency: str, name: str) -> int:
    """Getnet's value at `scale` digits → minor units at the currency's exponent, exactly."""
    shift = exponent(currency) - scale
    if shift >= 0:
        return value * 10 ** shift
    factor = 10 ** -shift
    if value % factor:
        raise MalformedLine(f"{name} {value} at scale {scale} is not exact in {currency}")
    return value // factor


def finish(line: SettlementRow, kind: str, gross: int, fee: int, net: int) -> SettlementRow:
    """Check signs and totals, then store positive amounts (the type gives the direction)."""
    sign = 1 if kind == CAPTURE else -1
    if gross * sign <= 0:
        raise MalformedLine(f"a {kind} line needs a {'positive' if sign > 0 else 'negative'} "
                            f"gross amount, not {gross}")
    if fee < 0 or net * sign < 0:
        raise MalformedLine(f"negative fee {fee} or net {net} of the wrong sign")
    line.type, line.gross, line.fee, line.net = kind, abs(gross), fee, abs(net)
    if line.gross > MAX_AMOUNT:
        raise MalformedLine(f"gross {line.gross} is out of range")
    return line


def parse(lines: Iterable[str], delimiter: str, columns: tuple[str, ...],
           fill: Callable[[SettlementRow, tuple[str, ...]], object]) -> Iterator[SettlementRow]:
    """One SettlementRow per data line (blank lines skipped). `fill` gets the values of `columns`,
    in that order, and raises ValueError for a line that cannot be trusted, which is kept as
    malformed. Columns are found by name in the header, so a reordered file still parses."""
    pick: Callable[[list[str]], tuple[str, ...]] | None = None
    width = number = 0
    for text in lines:
        raw = text.rstrip("\r\n")
        if not raw.strip():
            continue
        if pick is None:
            header = [name.strip().lstrip("\ufeff") for name in split(raw, delimiter)]
            missing = [name for name in columns if name not in header]
            if missing:
                raise MalformedLine(f"header lacks column(s) {', '.join(missing)}")
            positions = [header.index(name) for name in columns]
            pick, width = itemgetter(*positions), max(positions) + 1
            continue
        number += 1
        line = SettlementRow(number, raw.replace("\x00", "\ufffd"))  # PostgreSQL text has no NUL
        fields = split(raw, delimiter)
        if len(fields) < width:
            line.error = f"{len(fields)} fields, expected at least {width}"
        else:
            try:
                fill(line, tuple(value.strip() for value in pick(fields)))
            except ValueError as exc:
                line.error = str(exc)
        yield line


@lru_cache(maxsize=512)
def day_month_year(text: str) -> date:
    return datetime.strptime(text, "%d/%m/%Y").date()


@lru_cache(maxsize=512)
def iso_day(text: str) -> date:
    return date.fromisoformat(text)


@lru_cache(maxsize=4096)
def iso_datetime_day(text: str) -> date:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).date()


@dataclass(frozen=True)
class Layout:
    """How one provider writes its settlement file: the delimiter; the columns holding the sale
    day, the charge's reference, our order id, the line's type, the currency and the refund's
    reference; its words for a capture and a refund; and how it writes days and amounts.
    `amounts` are the columns `read_amounts` turns into (gross, fee, net) minor units."""

    delimiter: str
    day: str
    reference: str
    order: str
    kind: str
    currency: str
    refund: str
    amounts: tuple[str, ...]
    kinds: Mapping[str, str]  # the provider's type word → CAPTURE or REFUND
    read_day: Callable[[str], date]
    read_amounts: Callable[[tuple[str, ...], str], tuple[int, int, int]]

    def parse(self, lines: Iterable[str]) -> Iterator[SettlementRow]:
        columns = (self.day, self.reference, self.order, self.kind, self.currency, self.refund,
                   *self.amounts)
        return parse(lines, self.delimiter, columns, self._fill)

    def _fill(self, line: SettlementRow, values: tuple[str, ...]) -> None:
        day, reference, order, kind_text, currency, refund, *amounts = values
        kind = self.kinds.get(kind_text)
        if kind is None:
            raise MalformedLine(f"unknown {self.kind} {kind_text!r}")
        line.provider_reference, line.merchant_reference = reference, order
        line.refund_reference = refund if kind == REFUND else ""
        line.transaction_date = self.read_day(day)
        line.currency = read_currency(currency)
        finish(line, kind, *self.read_amounts(tuple(amounts), line.currency))
