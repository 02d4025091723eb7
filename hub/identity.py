"""Identity resolution: which canonical record a vendor record without an external link is.

The page writer looks external links up first. For the page's records that have none, it
asks `IdentityKeys.load` once (one query for the whole page), then `PageIdentity.match` per
record, in memory:

- contact: normalised email, then phone;
- account: normalised domain, then name (case-insensitive, whitespace collapsed);
- lead, opportunity: no match keys (a record without a link creates).

Keys are tried in order; the first that finds a canonical record wins. Only live
(non-archived) records match. A weaker key never joins two records whose stronger keys
differ: a phone matches only when the record or the candidate has no email (two people
with different addresses may share an office number), a name only when one side has no
domain (many companies share a name). When several canonical records share the key, the
oldest (by created_at, then id) is chosen and the decision says so; nothing is dropped or
merged away.

Records of the same page resolve against each other too: `PageIdentity.add` registers each
entity the page touched, so two records with one email make one entity. Across workers
(PostgreSQL), a transaction-level advisory lock per entity type, taken before the look-up
and held to the page's commit, keeps two connectors' pages from both creating one person.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, and_, func, or_, select

from hub.transforms import e164
from state import repos

__all__ = ["MATCH_KEYS", "IdentityKeys", "MatchKey", "PageIdentity", "lookup_key", "norm_domain", "norm_email",
           "norm_name", "norm_phone"]

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_OLDEST = datetime.min.replace(tzinfo=UTC)
#: advisory lock keys (PostgreSQL) that order identity look-ups of one entity type
IDENTITY_LOCKS = {"contact": 0x43524D4901, "account": 0x43524D4902}


def norm_email(v: Any) -> str | None:
    if not isinstance(v, str):
        return None
    s = v.strip().lower()
    if s.startswith("mailto:"):
        s = s[7:]
    return s if "@" in s else None


def norm_phone(v: Any) -> str | None:
    """E.164, as the `phone` transform stores it (hub.transforms.e164)."""
    return e164(v) if isinstance(v, str) else None


def norm_domain(v: Any) -> str | None:
    """`https://www.Acme.com/about` -> `acme.com`."""
    if not isinstance(v, str):
        return None
    s = v.strip().lower()
    if "://" in s:
        s = s.split("://", 1)[1]
    s = s.split("/", 1)[0].split("?", 1)[0].rstrip(".")
    if s.startswith("www."):
        s = s[4:]
    return s or None


def norm_name(v: Any) -> str | None:
    if not isinstance(v, str):
        return None
    return " ".join(v.split()).lower() or None


@dataclass(frozen=True, slots=True)
class MatchKey:
    field: str
    normalise: Callable[[Any], str | None]
    #: compared as `lower(column)` in SQL (an expression index serves it), else as stored
    lowered: bool


MATCH_KEYS: dict[str, tuple[MatchKey, ...]] = {
    "contact": (MatchKey("email", norm_email, True), MatchKey("phone", norm_phone, False)),
    "account": (MatchKey("domain", norm_domain, True), MatchKey("name", norm_name, True)),
}


#: the key a person asks by and whose repeats are duplicates (`crmhub explain`, `duplicates`,
#: `migrate plan`): a lead has no match key, yet its email names it
LOOKUP_KEYS: dict[str, MatchKey] = {"contact": MATCH_KEYS["contact"][0], "account": MATCH_KEYS["account"][0],
                                    "lead": MatchKey("email", norm_email, True)}


def lookup_key(entity: str) -> MatchKey | None:
    """The entity's lookup key: a built-in's above, else a custom object's first match key."""
    key = LOOKUP_KEYS.get(entity)
    if key is None and entity in MATCH_KEYS:
        key = MATCH_KEYS[entity][0]
    return key


def _variants(key: MatchKey, raw: Any, norm: str, out: set[str]) -> None:
    """Values to look for in SQL: the normalised one, plus the stored spelling it may come
    from (a column written without the normaliser; a `lower()` that folds ASCII only)."""
    out.add(norm)
    if raw != norm and isinstance(raw, str):
        s = raw.strip()
        if key.lowered:
            s = s.lower()
            if not raw.isascii():
                out.add(raw.strip().translate(_ASCII_LOWER))
        out.add(s)


class IdentityKeys:
    """The match keys of one entity, and the page query that finds their candidates."""

    def __init__(self, entity: str, table: Table, keys: Sequence[MatchKey]):
        if not 1 <= len(keys) <= 2:
            raise ValueError("identity resolution takes one or two match keys per entity")
        self.entity = entity
        self.table = table
        self.keys = tuple(keys)
        #: the fields match keys read: an entity whose values change there must be re-indexed
        self.fields = frozenset(k.field for k in self.keys)
        self.names = list(table.c.keys())
        t = f"{table.schema}.{table.name}"
        cols = [f"lower({k.field})" if k.lowered else k.field for k in self.keys]
        where = f"{cols[0]} = ANY(%s)"
        if len(self.keys) == 2:
            # the weaker key: any candidate for records without the stronger one, else only
            # candidates without it (never two records whose stronger keys differ)
            where += f" OR {cols[1]} = ANY(%s) OR ({cols[1]} = ANY(%s) AND coalesce({self.keys[0].field}, '') = '')"
        self._pg_sql = f"SELECT {', '.join(self.names)} FROM {t} WHERE archived_at IS NULL AND ({where})"

    @classmethod
    def for_entity(cls, entity: str, table: Table) -> IdentityKeys | None:
        keys = MATCH_KEYS.get(entity)
        return cls(entity, table, keys) if keys else None

    def load(self, conn: Connection, records: Iterable[dict[str, Any]]) -> PageIdentity:
        """One query for every candidate of the page's unlinked records (`records`: their mapped values)."""
        page = PageIdentity(self.keys)
        strong: set[str] = set()
        weak_alone: set[str] = set()  # weaker key of records that lack the stronger one
        weak_guarded: set[str] = set()  # weaker key of records that have it
        k0 = self.keys[0]
        k1 = self.keys[1] if len(self.keys) == 2 else None
        norm = page.norm
        for values in records:
            raw = values.get(k0.field)
            n0 = norm(0, raw)
            if n0 is not None:
                _variants(k0, raw, n0, strong)
            if k1 is not None:
                raw1 = values.get(k1.field)
                n1 = norm(1, raw1)
                if n1 is not None:
                    _variants(k1, raw1, n1, weak_guarded if n0 is not None else weak_alone)
        if not (strong or weak_alone or weak_guarded):
            return page
        if conn.dialect.name == "postgresql":
            # before the look-up, in its own statement (so the look-up's snapshot sees what the
            # previous holder committed); held until this page commits. SQLite: one writer anyway.
            repos._pg_rows(conn, "SELECT pg_advisory_xact_lock(%s)", (IDENTITY_LOCKS.get(self.entity, 0x43524D4900),))
            params: tuple[Any, ...] = (list(strong),)
            if k1 is not None:
                params += (list(weak_alone), list(weak_guarded))
            rows = [dict(zip(self.names, r, strict=True)) for r in repos._pg_rows(conn, self._pg_sql, params)]
        else:
            rows = self._load_portable(conn, strong, weak_alone, weak_guarded)
        for row in rows:
            page.add(row)
        page.loaded = {r["id"]: r for r in rows}
        return page

    def _load_portable(self, conn: Connection, strong: set[str], weak_alone: set[str],
                       weak_guarded: set[str]) -> list[dict[str, Any]]:
        t = self.table

        def col(k: MatchKey) -> Any:
            return func.lower(t.c[k.field]) if k.lowered else t.c[k.field]

        k0 = self.keys[0]
        conds = [col(k0).in_(sorted(strong))] if strong else []
        if len(self.keys) == 2:
            k1 = self.keys[1]
            if weak_alone:
                conds.append(col(k1).in_(sorted(weak_alone)))
            if weak_guarded:
                conds.append(and_(col(k1).in_(sorted(weak_guarded)), func.coalesce(t.c[k0.field], "") == ""))
        q = select(t).where(t.c.archived_at.is_(None), or_(*conds))
        return [dict(r) for r in conn.execute(q).mappings()]


class PageIdentity:
    """One page's candidates by normalised key; entities the page touches are added as it goes."""

    def __init__(self, keys: Sequence[MatchKey]):
        self.keys = tuple(keys)
        self.fields = tuple(k.field for k in keys)
        self.index: list[dict[str, dict[str, dict[str, Any]]]] = [{} for _ in keys]
        #: canonical id -> row, as loaded (the writer takes them as the entities' current state)
        self.loaded: dict[str, dict[str, Any]] = {}
        #: per key, raw value -> normalised: a value is normalised once per page
        self._memo: list[dict[str, str | None]] = [{} for _ in keys]

    def norm(self, i: int, raw: Any) -> str | None:
        """Key `i` of a raw value, normalised (None: no key)."""
        if raw.__class__ is not str:
            return None
        memo = self._memo[i]
        v = memo.get(raw, memo)
        if v is memo:
            v = memo[raw] = self.keys[i].normalise(raw)
        return v  # type: ignore[return-value]

    def add(self, row: dict[str, Any]) -> None:
        """Make `row` (a live dict with `id`, updated in place by the writer) matchable."""
        for i, f in enumerate(self.fields):
            v = self.norm(i, row.get(f))
            if v is not None:
                self.index[i].setdefault(v, {})[row["id"]] = row

    def match(self, values: dict[str, Any]) -> tuple[str, str] | None:
        """(canonical id, why) for a record's mapped values, or None: create."""
        norm, fields = self.norm, self.fields
        norms = [norm(i, values.get(f)) for i, f in enumerate(fields)]
        for i, v in enumerate(norms):
            if v is None:
                continue
            found = self.index[i].get(v)
            if not found:
                continue
            f = fields[i]
            live = [r for r in found.values()
                    if r.get("archived_at") is None and norm(i, r.get(f)) == v
                    and all(norms[j] is None or norm(j, r.get(fields[j])) is None for j in range(i))]
            if not live:
                continue
            best = min(live, key=_age) if len(live) > 1 else live[0]
            why = f"matched on {f} {v!r}"
            if len(live) > 1:
                why += f"; {len(live)} canonical records share it, linked to the oldest ({best['id']})"
            return best["id"], why
        return None


def _age(row: dict[str, Any]) -> tuple[bool, datetime, str]:
    created = row.get("created_at")
    return created is None, created or _OLDEST, str(row["id"])
