"""Money rules: integer minor units, lower-case ISO 4217 currencies and their exponents."""

from decimal import Decimal

# ISO 4217 minor-unit exponents. Everything not listed as 0 or 3 uses 2.
ZERO_DECIMAL = {
    "bif", "clp", "djf", "gnf", "isk", "jpy", "kmf", "krw", "pyg", "rwf", "ugx", "uyi", "vnd",
    "vuv", "xaf", "xof", "xpf",
}
THREE_DECIMAL = {"bhd", "iqd", "jod", "kwd", "lyd", "omr", "tnd"}
TWO_DECIMAL = {
    "aed", "ars", "aud", "bgn", "brl", "cad", "chf", "cny", "cop", "czk", "dkk", "egp", "eur",
    "gbp", "hkd", "huf", "idr", "ils", "inr", "mad", "mxn", "myr", "ngn", "nok", "nzd", "pen",
    "php", "pkr", "pln", "ron", "rub", "sar", "sek", "sgd", "thb", "try", "twd", "uah", "usd",
    "zar",
}
CURRENCIES = frozenset(ZERO_DECIMAL | THREE_DECIMAL | TWO_DECIMAL)

MAX_AMOUNT = 99_999_999_999  # contract: larger values are rejected


def exponent(currency: str) -> int:
    if currency in ZERO_DECIMAL:
        return 0
    if currency in THREE_DECIMAL:
        return 3
    return 2


def to_decimal(amount: int, currency: str) -> Decimal:
    """Minor units to a major-unit Decimal, for display only (1050 usd → Decimal('10.50'))."""
    return Decimal(amount).scaleb(-exponent(currency))


def format_amount(amount: int, currency: str) -> str:
    return f"{to_decimal(amount, currency):,} {currency.upper()}"
