"""Value transforms a mapping may name. Each takes a value and returns it or raises MappingError.

`None` passes through every transform except `default` and `constant`, so a missing
vendor field stays missing rather than failing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["TRANSFORMS", "MappingError", "build_transform"]


class MappingError(ValueError):
    """A record's value cannot be mapped; the record goes to the retry queue with this reason."""


Transform = Callable[[Any], Any]

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


def phone(v: Any) -> Any:
    """Strip punctuation; keep a leading + and digits (full E.164 with regions comes with identity rules)."""
    if v is None:
        return None
    s = _PHONE_JUNK.sub("", _PHONE_EXT.sub("", _str(v).strip()))
    if not s:
        return None
    if s.startswith("00"):
        s = "+" + s[2:]
    digits = s[1:] if s.startswith("+") else s
    if not digits.isdigit() or not 4 <= len(digits) <= 15:
        raise MappingError(f"not a phone number: {v!r}")
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
#: transforms that take an argument: `{map: {...}}`, `{default: x}`, `{constant: x}`
PARAM_TRANSFORMS = ("map", "default", "constant")


def build_transform(spec: Any) -> Transform:
    """A transform from its YAML form: a name, or a one-key mapping with an argument."""
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
            def mapped(v: Any) -> Any:
                if v is None:
                    return None
                key = _str(v).strip().lower()
                if key in table:
                    return table[key]
                raise MappingError(f"value {v!r} is not in the value map (known: {', '.join(sorted(table))})")
            return mapped
        if name == "default":
            return lambda v: arg if v is None or v == "" else v
        if name == "constant":
            return lambda _v: arg
    raise KeyError(str(spec))
