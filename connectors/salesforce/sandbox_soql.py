"""The SOQL subset the Salesforce sandbox understands, parsed and evaluated the way Salesforce does.

    SELECT f, ... FROM Object [WHERE cond] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], ...] [LIMIT n]
    cond:  comparison | NOT cond | (cond) | cond AND cond ... | cond OR cond ...
           (AND and OR are not mixed on one level without parentheses: Salesforce refuses that too)
    comparison: field (= != <> < <= > >=) literal | field [NOT] IN (literal, ...) | field [NOT] LIKE 'pattern'
    literal: 'string' (escapes \\' \\" \\\\ \\n \\r \\t \\b \\f \\uXXXX; \\_ \\% in LIKE only),
             2024-06-01T00:00:00Z (or +hh:mm), 2024-06-01, numbers, true, false, null

String comparisons are case-insensitive, as in Salesforce; Id comparisons are exact. A query it
cannot parse is a ``MALFORMED_QUERY`` error, an unknown field ``INVALID_FIELD``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

__all__ = ["Query", "SoqlSyntaxError", "parse_query", "parse_time", "sort_key"]


class SoqlSyntaxError(ValueError):
    """`code` is the errorCode Salesforce would answer with."""

    def __init__(self, message: str, code: str = "MALFORMED_QUERY"):
        super().__init__(message)
        self.code = code


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>'(?:[^'\\]|\\.)*')
  | (?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\d:T]))
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<op>!=|<>|<=|>=|=|<|>)
  | (?P<punct>[(),])
  | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
""", re.VERBOSE)
_ESC = {"'": "'", '"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}
_KEYWORDS = {"SELECT", "FROM", "WHERE", "ORDER", "BY", "LIMIT", "AND", "OR", "NOT", "IN", "LIKE", "ASC",
             "DESC", "NULLS", "FIRST", "LAST", "TRUE", "FALSE", "NULL"}
_LIKE_ESC = "\x00"  # marks an escaped _ or % inside a LIKE pattern


def parse_time(value: str) -> datetime:
    s = value.strip().replace("Z", "+00:00")
    if len(s) > 5 and s[-5] in "+-" and s[-4:].isdigit():
        s = f"{s[:-2]}:{s[-2:]}"
    d = datetime.fromisoformat(s)
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def _unescape(body: str, like: bool) -> str:
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if nxt in _ESC:
            out.append(_ESC[nxt])
            i += 2
        elif nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2:i + 6]):
            out.append(chr(int(body[i + 2:i + 6], 16)))
            i += 6
        elif nxt in "_%" and like:
            out.append(_LIKE_ESC + nxt)
            i += 2
        else:
            raise SoqlSyntaxError(f"Invalid string literal '{body}'. Illegal character sequence '\\{nxt}' "
                                  "in string literal.")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    text: str


def _tokens(q: str) -> list[_Tok]:
    out, pos = [], 0
    while pos < len(q):
        m = _TOKEN.match(q, pos)
        if not m:
            raise SoqlSyntaxError(f"unexpected token at: {q[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append(_Tok(kind, m.group()))
    return out


Pred = Callable[[dict[str, Any]], bool]


def sort_key(value: Any) -> tuple[int, Any]:
    """Nulls first, then values; Salesforce datetimes compare as times."""
    if value is None:
        return (0, "")
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float):
        return (1, value)
    s = str(value)
    if len(s) >= 19 and s[4] == "-" and s[10] == "T":
        try:
            return (2, parse_time(s).timestamp())
        except ValueError:
            pass
    return (3, s)


def _value(raw: Any, lit: Any) -> Any:
    """The record's value in the literal's type, for comparing."""
    if raw is None:
        return None
    if isinstance(lit, datetime):
        try:
            return parse_time(str(raw))
        except ValueError:
            return None
    if isinstance(lit, date):
        try:
            return date.fromisoformat(str(raw)[:10])
        except ValueError:
            return None
    if isinstance(lit, bool):
        return bool(raw)
    if isinstance(lit, int | float):
        try:
            return float(raw)
        except (TypeError, ValueError):
            return None
    return str(raw)


def _cmp(field: str, op: str, lit: Any) -> Pred:
    exact = field == "Id" or field.endswith("Id")
    fold = isinstance(lit, str) and not exact

    def pred(rec: dict[str, Any]) -> bool:
        v = _value(rec.get(field), lit)
        target = float(lit) if isinstance(lit, int | float) and not isinstance(lit, bool) else lit
        if fold and v is not None:
            v, target = str(v).casefold(), str(target).casefold()
        if op == "=":
            return bool(v == target)
        if op in ("!=", "<>"):
            return bool(v != target)
        if v is None or target is None:
            return False
        if op == "<":
            return bool(v < target)
        if op == "<=":
            return bool(v <= target)
        if op == ">":
            return bool(v > target)
        return bool(v >= target)

    return pred


def _like(field: str, pattern: str) -> Pred:
    parts = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == _LIKE_ESC:
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        parts.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    rx = re.compile("".join(parts), re.IGNORECASE | re.DOTALL)
    return lambda rec: rec.get(field) is not None and rx.fullmatch(str(rec.get(field))) is not None


@dataclass
class Query:
    fields: list[str]
    sobject: str
    where: Pred | None
    order_by: list[tuple[str, bool, bool]]  # field, descending, nulls last
    limit: int | None
    where_fields: set[str]


class _Parser:
    def __init__(self, q: str) -> None:
        self.toks = _tokens(q)
        self.i = 0
        self.where_fields: set[str] = set()

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def kw(self, word: str) -> bool:
        t = self.peek()
        if t is not None and t.kind == "name" and t.text.upper() == word:
            self.i += 1
            return True
        return False

    def expect_kw(self, word: str) -> None:
        if not self.kw(word):
            got = self.peek()
            raise SoqlSyntaxError(f"expecting '{word}', found '{got.text if got else '<end>'}'")

    def punct(self, ch: str) -> bool:
        t = self.peek()
        if t is not None and t.kind == "punct" and t.text == ch:
            self.i += 1
            return True
        return False

    def name(self) -> str:
        t = self.peek()
        if t is None or t.kind != "name" or t.text.upper() in _KEYWORDS:
            raise SoqlSyntaxError(f"expecting a name, found '{t.text if t else '<end>'}'")
        self.i += 1
        return t.text

    def literal(self, like: bool = False) -> Any:
        t = self.peek()
        if t is None:
            raise SoqlSyntaxError("expecting a value, found '<end>'")
        self.i += 1
        if t.kind == "str":
            return _unescape(t.text[1:-1], like)
        if t.kind == "dt":
            return parse_time(t.text)
        if t.kind == "date":
            return date.fromisoformat(t.text)
        if t.kind == "num":
            return float(t.text) if "." in t.text else int(t.text)
        if t.kind == "name" and t.text.upper() in ("TRUE", "FALSE"):
            return t.text.upper() == "TRUE"
        if t.kind == "name" and t.text.upper() == "NULL":
            return None
        raise SoqlSyntaxError(f"unexpected token: '{t.text}'")

    def condition(self) -> Pred:
        first = self.factor()
        preds, joiner = [first], None
        while True:
            t = self.peek()
            word = t.text.upper() if t is not None and t.kind == "name" else None
            if word not in ("AND", "OR"):
                break
            if joiner is not None and word != joiner:
                raise SoqlSyntaxError(f"unexpected token: '{word}' (use parentheses to mix AND and OR)")
            joiner = word
            self.i += 1
            preds.append(self.factor())
        if len(preds) == 1:
            return first
        if joiner == "AND":
            return lambda r: all(p(r) for p in preds)
        return lambda r: any(p(r) for p in preds)

    def factor(self) -> Pred:
        if self.kw("NOT"):
            inner = self.factor()
            return lambda r: not inner(r)
        if self.punct("("):
            inner = self.condition()
            if not self.punct(")"):
                raise SoqlSyntaxError("expecting ')'")
            return inner
        field = self.name()
        self.where_fields.add(field)
        negate = self.kw("NOT")
        if self.kw("IN"):
            if not self.punct("("):
                raise SoqlSyntaxError("expecting '(' after IN")
            values = [self.literal()]
            while self.punct(","):
                values.append(self.literal())
            if not self.punct(")"):
                raise SoqlSyntaxError("expecting ')'")
            preds = [_cmp(field, "=", v) for v in values]
            return (lambda r: not any(p(r) for p in preds)) if negate else (lambda r: any(p(r) for p in preds))
        if self.kw("LIKE"):
            pattern = self.literal(like=True)
            if not isinstance(pattern, str):
                raise SoqlSyntaxError("LIKE needs a string")
            pred = _like(field, pattern)
            return (lambda r: not pred(r)) if negate else pred
        if negate:
            raise SoqlSyntaxError("expecting IN or LIKE after NOT")
        t = self.peek()
        if t is None or t.kind != "op":
            raise SoqlSyntaxError(f"expecting an operator after {field}, found '{t.text if t else '<end>'}'")
        self.i += 1
        return _cmp(field, t.text, self.literal())


def parse_query(q: str) -> Query:
    p = _Parser(q)
    p.expect_kw("SELECT")
    fields = [p.name()]
    while p.punct(","):
        fields.append(p.name())
    p.expect_kw("FROM")
    sobject = p.name()
    where = p.condition() if p.kw("WHERE") else None
    order: list[tuple[str, bool, bool]] = []
    if p.kw("ORDER"):
        p.expect_kw("BY")
        while True:
            f = p.name()
            desc = p.kw("DESC") or (p.kw("ASC") and False)
            nulls_last = desc
            if p.kw("NULLS"):
                nulls_last = p.kw("LAST") or not p.kw("FIRST")
            order.append((f, desc, nulls_last))
            if not p.punct(","):
                break
    limit = None
    if p.kw("LIMIT"):
        lit = p.literal()
        if not isinstance(lit, int) or isinstance(lit, bool) or lit < 0:
            raise SoqlSyntaxError("LIMIT must be a non-negative integer")
        limit = lit
    rest = p.peek()
    if rest is not None:
        raise SoqlSyntaxError(f"unexpected token: '{rest.text}'")
    return Query(fields, sobject, where, order, limit, p.where_fields)
