"""SOQL built from parts, so a value can never change the query's shape.

Every place the connector puts a value into SOQL goes through this module:

    literal("O'Brien \\ Co")          -> 'O\\'Brien \\\\ Co'   (quoted, escaped)
    literal(datetime(...))           -> 2024-06-01T00:00:00Z (datetimes are never quoted)
    field("SystemModstamp")          -> SystemModstamp      (names are checked, never escaped)
    select(["Id", "Name"], "Account", where=..., order_by=[...], limit=...)

Salesforce's rules (SOQL reference, "Quoted String Escape Sequences"): inside a quoted literal
``\\' \\" \\\\ \\n \\r \\t \\b \\f`` are escapes and any other backslash is an error; ``\\_`` and
``\\%`` are valid only in LIKE patterns. Names (objects, fields, relationship paths) cannot be
quoted at all, so they are checked against the identifier grammar instead of escaped: a name
that is not one is refused with an error naming it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal

__all__ = ["SoqlError", "and_", "eq", "field", "in_", "like", "literal", "or_", "select", "sobject", "soql_datetime"]

# API names: a letter, then letters, digits and underscores (Foo__c, ns__Bar__c); no quote, space,
# dot or parenthesis can pass. A dot joins relationship steps (Account.Name), checked step by step.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,99}")
_ESCAPES = {"\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
            "\f": "\\f"}
_OPS = frozenset({"=", "!=", "<", "<=", ">", ">="})


class SoqlError(ValueError):
    """A name or value that cannot go into SOQL; the message names it."""


def sobject(name: str) -> str:
    """An sObject API name (Account, Foo__c, ns__Bar__c), checked."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SoqlError(f"not a Salesforce object name: {name!r}")
    return name


def field(name: str) -> str:
    """A field or relationship path (Name, Account.Name, Foo__r.Bar__c), checked."""
    if not isinstance(name, str) or not name or not all(_NAME.fullmatch(p) for p in name.split(".")):
        raise SoqlError(f"not a Salesforce field name: {name!r}")
    return name


def _escape(text: str, *, like_pattern: bool = False) -> str:
    out = "".join(_ESCAPES.get(ch, ch) for ch in text)
    if like_pattern:
        # in LIKE, _ and % are wildcards: a value's own _ and % must match themselves
        out = out.replace("_", "\\_").replace("%", "\\%")
    return out


def soql_datetime(value: datetime) -> str:
    """A datetime literal: UTC, second precision, `Z`, unquoted (SOQL's documented format)."""
    if value.tzinfo is None:
        raise SoqlError(f"a SOQL datetime needs a time zone: {value!r}")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def literal(value: object) -> str:
    """Any Python value as a SOQL literal; strings are quoted and escaped, others are never quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise SoqlError(f"not a SOQL number: {value!r}")
        return repr(value)
    if isinstance(value, datetime):
        return soql_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        if "\x00" in value:
            raise SoqlError("a SOQL string cannot hold a NUL character")
        return f"'{_escape(value)}'"
    raise SoqlError(f"no SOQL literal for a {type(value).__name__}: {value!r}")


def eq(name: str, value: object, op: str = "=") -> str:
    """`name op literal`, e.g. ``eq("Id", x, ">")``."""
    if op not in _OPS:
        raise SoqlError(f"not a SOQL comparison operator: {op!r}")
    return f"{field(name)} {op} {literal(value)}"


def like(name: str, contains: str) -> str:
    """`name LIKE '%value%'` where the value's own wildcards match literally."""
    return f"{field(name)} LIKE '%{_escape(contains, like_pattern=True)}%'"


def in_(name: str, values: Iterable[object]) -> str:
    items = [literal(v) for v in values]
    if not items:
        raise SoqlError(f"IN needs at least one value for {name}")
    return f"{field(name)} IN ({', '.join(items)})"


def and_(*parts: str) -> str:
    kept = [p for p in parts if p]
    return " AND ".join(f"({p})" if len(kept) > 1 else p for p in kept)


def or_(*parts: str) -> str:
    kept = [p for p in parts if p]
    return " OR ".join(f"({p})" if len(kept) > 1 else p for p in kept)


def select(fields: Sequence[str], sobject_name: str, *, where: str = "", order_by: Sequence[str] = (),
           limit: int | None = None) -> str:
    """A SELECT; `where` must come from the builders above (never from an f-string of values)."""
    if not fields:
        raise SoqlError("a SELECT needs at least one field")
    names = list(dict.fromkeys(field(f) for f in fields))
    q = f"SELECT {', '.join(names)} FROM {sobject(sobject_name)}"
    if where:
        q += f" WHERE {where}"
    if order_by:
        parts = []
        for o in order_by:
            name, _, direction = o.partition(" ")
            if direction and direction.upper() not in ("ASC", "DESC"):
                raise SoqlError(f"not a sort direction: {direction!r}")
            parts.append(f"{field(name)} {direction.upper()}".rstrip())
        q += f" ORDER BY {', '.join(parts)}"
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise SoqlError(f"not a SOQL LIMIT: {limit!r}")
        q += f" LIMIT {limit}"
    return q
