"""Checksums of mapped fields: the same value from the source and from either database store
gives the same text, so a checksum compares a legacy record with its canonical row."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson

__all__ = ["checksum", "norm", "same"]


def norm(v: Any) -> str:
    """A value as a checksum reads it: times in UTC to the microsecond, numbers without trailing zeros."""
    t = type(v)
    if t is str:
        return v
    if v is None:
        return "\x00"
    if t is datetime or isinstance(v, datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        elif v.utcoffset():
            v = v.astimezone(UTC)
        return v.replace(tzinfo=None).isoformat(timespec="microseconds")
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, int | float | Decimal):
        d = Decimal(str(v)).normalize()
        return "0" if d.is_zero() else format(d, "f")
    if isinstance(v, dict | list):
        return orjson.dumps(v, default=str, option=orjson.OPT_SORT_KEYS).decode()
    return str(v)


def same(a: Any, b: Any) -> bool:
    """Whether two values are the same to a checksum (equal as they are, the fast path, or once normalised)."""
    return a == b or norm(a) == norm(b)


def checksum(values: Mapping[str, Any], fields: Iterable[str]) -> str:
    """md5 (an identity check, not a security one) of `fields` of `values`, in the order given."""
    text = "\x1f".join([f"{f}={norm(values.get(f))}" for f in fields])
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
