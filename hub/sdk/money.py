"""Money in minor units (cents, yen, fils) to decimal amounts, by the currency's exponent.

Vendors such as Stripe send `amount: 1999, currency: "usd"` meaning 19.99 USD, but
`amount: 1999, currency: "jpy"` meaning 1,999 JPY. The exponent is the ISO 4217 number of
minor-unit digits; the lists below are the currencies whose exponent is not 2, as Stripe
documents them (https://docs.stripe.com/currencies#zero-decimal, #three-decimal).
"""

from __future__ import annotations

from decimal import Decimal

__all__ = ["THREE_DECIMAL", "ZERO_DECIMAL", "exponent", "from_minor_units", "to_minor_units"]

ZERO_DECIMAL = frozenset({"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX",
                          "VND", "VUV", "XAF", "XOF", "XPF"})
THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})


def exponent(currency: str) -> int:
    c = currency.strip().upper()
    if len(c) != 3 or not c.isalpha():
        raise ValueError(f"not an ISO 4217 currency code: {currency!r}")
    return 0 if c in ZERO_DECIMAL else 3 if c in THREE_DECIMAL else 2


def from_minor_units(amount: int | float | str, currency: str) -> Decimal:
    """`(1999, "usd")` -> `Decimal("19.99")`; `(1999, "jpy")` -> `Decimal("1999")`."""
    if isinstance(amount, bool) or (isinstance(amount, float) and not amount.is_integer()):
        raise ValueError(f"minor units must be a whole number: {amount!r}")
    return Decimal(int(amount)).scaleb(-exponent(currency))


def to_minor_units(amount: Decimal, currency: str) -> int:
    """The inverse: refuses an amount with more digits than the currency has."""
    scaled = amount.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} {currency.upper()} has more decimals than the currency allows")
    return int(scaled)
