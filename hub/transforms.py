"""Value transforms a mapping may name. Each takes a value and returns it or raises MappingError.

`None` passes through every transform except `default` and `constant`, so a missing
vendor field stays missing rather than failing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

import phonenumbers

from hub.sdk.money import from_minor_units

__all__ = ["OUTPUT_TYPES", "TRANSFORMS", "MappingError", "build_transform", "e164", "set_default_region"]

#: the region a national-format number (`(415) 555-0100`) belongs to, unless a mapping names
#: another (`{phone: GB}`); crmhub.yaml `identity.default_region` sets it for the process
DEFAULT_REGION = "US"


def set_default_region(region: str) -> None:
    global DEFAULT_REGION
    DEFAULT_REGION = region.upper()


class MappingError(ValueError):
    """A record's value cannot be mapped; the record goes to the retry queue with this reason."""


Transform = Callable[[Any], Any]
_UNKNOWN: Any = object()

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE_JUNK = re.compile(r"[\s().\-/]")
_PHONE_EXT = re.compile(r"\s*(?:;?ext\.?|extension|x|#)\s*\d{1,6}\s*$", re.IGNORECASE)


def _str(v: Any) -> str:
    return v if isinstance(v, str) else str(v)


def trim(v: Any) -> Any:
    if v is None:
        return None
    s = _str(v).strip()
    return s or None


def lower(v: Any) -> Any:
    return None if v is None else _str(v).lower()


def upper(v: Any) -> Any:
    return None if v is None else _str(v).upper()


def email(v: Any) -> Any:
    """Trim, lower-case and check the shape; an unusable address is a mapping error."""
    if v is None:
        return None
    s = _str(v).strip().lower()
    if not s:
        return None
    if s.startswith("mailto:"):
        s = s[7:]
    if not _EMAIL.match(s):
        raise MappingError(f"not an email address: {v!r}")
    return s


_NANP = frozenset({"US", "CA"})


def e164(v: Any, region: str | None = None) -> str | None:
    """A phone number as E.164 (`+14155550100`), however it was written; None if it is not one.

    `(415) 555-0100`, `415.555.0100`, `+1 415 555 0100`, `001 415 555 0100` and
    `tel:+1-415-555-0100` are one number. National forms take `region` (else DEFAULT_REGION).
    Plain international and North American forms take a fast path; the rest go through
    phonenumbers (trunk prefixes such as `+44 (0)20`, extensions, vanity letters).
    """
    if v is None:
        return None
    raw = _str(v).strip()
    if not raw:
        return None
    return _e164(raw, region or DEFAULT_REGION)


@lru_cache(maxsize=1 << 13)  # the same numbers come back on every call of a page; 8k entries ~1.5 MB (64k held 12 MB)
def _e164(raw: str, region: str) -> str | None:
    s = _PHONE_JUNK.sub("", _PHONE_EXT.sub("", raw))
    if s.startswith("tel:"):
        s = s[4:]
    if s.startswith("00"):
        s = "+" + s[2:]
    if s.startswith("+"):
        # brackets may hold a trunk prefix (`+44 (0)20 ...`), which phonenumbers drops; a North
        # American number has none, so `+1 (415) 555-0100` need not pay for a parse (~25 us)
        if s[1:].isdigit() and s[1] != "0" and 8 <= len(s) - 1 <= 15 and (
                "(" not in raw or (s[1] == "1" and len(s) == 12 and s[2] not in "01")):
            return s
    elif s.isdigit() and region in _NANP:
        if len(s) == 10 and s[0] not in "01":
            return "+1" + s
        if len(s) == 11 and s[0] == "1" and s[1] not in "01":
            return "+" + s
    try:
        n = phonenumbers.parse(s if s.startswith("+") else raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(n):
        return None
    return phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)


def phone(v: Any, region: str | None = None) -> Any:
    """E.164 (see `e164`); a value that is not a phone number is a mapping error."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    out = e164(v, region)
    if out is None:
        raise MappingError(f"not a phone number: {v!r}")
    return out


def concat(parts: Any, sep: str = " ") -> Any:
    """The non-empty parts of a list path, joined: `[first, last]` -> `"Ann Lee"`."""
    if parts is None:
        return None
    if not isinstance(parts, list | tuple):
        parts = [parts]
    text = sep.join(_str(p).strip() for p in parts if p is not None and _str(p).strip())
    return text or None


def minor_units(v: Any) -> Any:
    """`[amount, currency]` in minor units (a list path) -> a decimal amount, by the currency's
    exponent: `[1999, "usd"]` -> 19.99, `[1999, "jpy"]` -> 1999."""
    if v is None:
        return None
    if not isinstance(v, list | tuple) or len(v) != 2:
        raise MappingError("minor_units needs a list path of [amount, currency]")
    amount, currency = v
    if amount is None or amount == "":
        return None
    if not currency:
        raise MappingError(f"amount {amount!r} in minor units has no currency")
    try:
        return from_minor_units(int(amount) if isinstance(amount, str) else amount, _str(currency))
    except (ValueError, TypeError) as err:
        raise MappingError(str(err)) from None


def domain(v: Any) -> Any:
    """A web address to its bare host: `https://www.Acme.com/about` -> `acme.com` (identity matches on it)."""
    if v is None:
        return None
    s = _str(v).strip().lower()
    if not s:
        return None
    if "://" in s:
        s = s.split("://", 1)[1]
    s = s.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0].rstrip(".")
    if s.startswith("www."):
        s = s[4:]
    if "." not in s or any(c.isspace() for c in s):
        raise MappingError(f"not a web address or domain: {v!r}")
    return s


def timestamp(v: Any) -> Any:
    """Epoch seconds or milliseconds, or ISO-8601, to an aware UTC datetime."""
    if v is None or v == "":
        return None
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=UTC)
    if isinstance(v, int | float) or (isinstance(v, str) and v.isdigit()):
        n = float(v)
        if n > 1e11:  # milliseconds
            n /= 1000.0
        return datetime.fromtimestamp(n, UTC)
    s = _str(v).strip()
    try:
        d = datetime.fromisoformat(s)
    except ValueError:
        raise MappingError(f"not a timestamp: {v!r}") from None
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def to_date(v: Any) -> Any:
    if v is None or v == "":
        return None
    if isinstance(v, date) and not isinstance(v, datetime):
        return v
    s = _str(v).strip()
    if len(s) == 10:
        try:
            return date.fromisoformat(s)
        except ValueError:
            raise MappingError(f"not a date: {v!r}") from None
    return timestamp(v).date()


def decimal(v: Any) -> Any:
    if v is None or v == "":
        return None
    try:
        return Decimal(_str(v).strip())
    except InvalidOperation:
        raise MappingError(f"not a number: {v!r}") from None


def integer(v: Any) -> Any:
    if v is None or v == "":
        return None
    try:
        return int(_str(v).strip())
    except ValueError:
        raise MappingError(f"not an integer: {v!r}") from None


def boolean(v: Any) -> Any:
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        return v
    s = _str(v).strip().lower()
    if s in ("true", "1", "yes", "y", "t"):
        return True
    if s in ("false", "0", "no", "n", "f"):
        return False
    raise MappingError(f"not a boolean: {v!r}")


def string(v: Any) -> Any:
    return None if v is None else _str(v)


TRANSFORMS: dict[str, Transform] = {
    "concat": concat,
    "domain": domain,
    "minor_units": minor_units,
    "trim": trim,
    "lower": lower,
    "upper": upper,
    "email": email,
    "phone": phone,
    "timestamp": timestamp,
    "date": to_date,
    "decimal": decimal,
    "int": integer,
    "bool": boolean,
    "string": string,
}
#: transforms that take an argument: `{map: {...}}`, `{default: x}`, `{constant: x}`, `{phone: GB}`,
#: `{concat: ", "}`
PARAM_TRANSFORMS = ("map", "default", "constant", "phone", "concat")

#: what each transform gives, so a mapping that puts a transform's output into a column of
#: another type fails at load time (hub.mapping); "any" passes a value's type through
OUTPUT_TYPES: dict[str, str] = {
    "concat": "text", "domain": "text", "minor_units": "number", "trim": "any", "lower": "text", "upper": "text",
    "email": "text", "phone": "text", "timestamp": "timestamp", "date": "date", "decimal": "number",
    "int": "integer", "bool": "boolean", "string": "text", "map": "any", "default": "any", "constant": "any",
}


def output_type(spec: Any) -> str:
    name = spec if isinstance(spec, str) else next(iter(spec)) if isinstance(spec, dict) and spec else ""
    return OUTPUT_TYPES.get(str(name), "any")


def build_transform(spec: Any) -> Transform:
    """A transform from its YAML form: a name, or a one-key mapping with an argument."""
    if spec == "concatenate":
        spec = "concat"
    if isinstance(spec, dict) and "concatenate" in spec:
        spec = {"concat": spec["concatenate"]}
    if isinstance(spec, str):
        if spec not in TRANSFORMS:
            raise KeyError(spec)
        return TRANSFORMS[spec]
    if isinstance(spec, dict) and len(spec) == 1:
        ((name, arg),) = spec.items()
        if name == "map":
            if not isinstance(arg, dict):
                raise TypeError("`map` takes a mapping of vendor value -> canonical value")
            table = {str(k).strip().lower(): val for k, val in arg.items()}
            # "*": what any other value becomes ("*": "*" keeps it as sent); without it, an
            # unknown value is the record's failure, so a new picklist value is never guessed at
            other = table.pop("*", _UNKNOWN)

            def mapped(v: Any) -> Any:
                if v is None:
                    return None
                key = _str(v).strip().lower()
                if key in table:
                    return table[key]
                if other is _UNKNOWN:
                    raise MappingError(f"value {v!r} is not in the value map (known: {', '.join(sorted(table))}). "
                                       "Fix: add it to the map, or a `\"*\"` entry for every other value")
                return _str(v).strip() if other == "*" else other
            return mapped
        if name == "phone":
            region = _str(arg).upper()
            if region not in phonenumbers.SUPPORTED_REGIONS:
                raise TypeError(f"`phone` takes a region code such as US or GB, not {arg!r}")
            return lambda v: phone(v, region)
        if name == "concat":
            sep = _str(arg)
            return lambda v: concat(v, sep)
        if name == "default":
            return lambda v: arg if v is None or v == "" else v
        if name == "constant":
            return lambda _v: arg
    raise KeyError(str(spec))
