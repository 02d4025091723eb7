"""Stripe amounts: integers in the currency's minor unit, as Stripe's API defines that unit.

Stripe's currency guide (https://docs.stripe.com/currencies, "Minor units in API amounts",
"Zero-decimal", "Three-decimal", "Special cases"):

- most currencies are two-decimal: `1999 usd` is 19.99 USD;
- zero-decimal currencies take the amount as is: `1999 jpy` is 1,999 JPY;
- three-decimal currencies (BHD, JOD, KWD, OMR, TND): `5120 kwd` is 5.120 KWD;
- special cases: ISK stays two-decimal in the API (`100` is 1 króna, amounts must be multiples
  of 100); HUF and TWD are two-decimal for charges (zero-decimal only for payouts). So the API
  exponent is not always the ISO 4217 one, and this table, not ISO's, converts Stripe amounts.
"""

from __future__ import annotations

from decimal import Decimal

__all__ = ["THREE_DECIMAL", "ZERO_DECIMAL", "api_exponent", "from_stripe_amount", "to_stripe_amount"]

ZERO_DECIMAL = frozenset({"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx",
                          "vnd", "vuv", "xaf", "xof", "xpf"})
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def api_exponent(currency: str) -> int:
    """Digits after the decimal point in a Stripe API amount of `currency`."""
    c = str(currency).strip().lower()
    if len(c) != 3 or not c.isalpha():
        raise ValueError(f"not a three-letter currency code: {currency!r}")
    return 0 if c in ZERO_DECIMAL else 3 if c in THREE_DECIMAL else 2


def from_stripe_amount(amount: int | str, currency: str) -> Decimal:
    """`(1999, "usd")` -> `Decimal("19.99")`; `(1999, "jpy")` -> `Decimal("1999")`;
    `(5120, "kwd")` -> `Decimal("5.120")`."""
    if isinstance(amount, bool) or not isinstance(amount, int | str):
        raise ValueError(f"a Stripe amount is a whole number of minor units, got {amount!r}")
    try:
        n = int(amount)
    except ValueError:
        raise ValueError(f"a Stripe amount is a whole number of minor units, got {amount!r}") from None
    return Decimal(n).scaleb(-api_exponent(currency))


def to_stripe_amount(value: Decimal, currency: str) -> int:
    """The inverse; refuses a value with more decimals than the API amount can carry."""
    scaled = Decimal(value).scaleb(api_exponent(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} {currency.upper()} has more decimals than Stripe amounts in it carry")
    return int(scaled)
