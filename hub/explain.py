"""`crmhub explain`: why a canonical field holds its value.

For one entity (found by canonical id, email or domain) and each of its fields (or one):
the current value, the system that set it (a connector instance, or `crm` for a value the
hub did not write), the rule that decided, and every decision about the field from the
change log, accepted and refused, in commit order. Two reads: the row with its provenance,
and the entity's change-log rows (indexed by entity, entity_id).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from sqlalchemy import Engine, func, select
from sqlalchemy import Table as SqlTable

from hub.identity import lookup_key
from hub.merge import merged_ids
from hub.ownership import Rules
from state.schema import ENTITY_TABLES, change_log

__all__ = ["ExplainError", "explain_doc", "find_entity", "render"]

#: columns that are not canonical fields of their own
_NOT_FIELDS = ("id", "custom", "provenance")


class ExplainError(Exception):
    """A question `explain` cannot answer (unknown entity, field or record); exit status 1 or 2."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


def _oldest_live(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not rows:
        return None

    def key(r: dict[str, Any]) -> tuple[bool, bool, str, str]:
        created = r.get("created_at")
        return r.get("archived_at") is not None, created is None, created.isoformat() if created else "", r["id"]
    return min(rows, key=key)


def find_entity(db: Engine, entity: str, key: str) -> tuple[dict[str, Any], str | None]:
    """The row `key` names (a canonical id, else its lookup key: email, domain, a custom object's
    match key), and a note when several match.

    Of several matches the live one created first is taken, as identity resolution links to it.
    """
    t = ENTITY_TABLES.get(entity)
    if t is None:
        raise ExplainError(f"unknown entity {entity!r}: use one of {', '.join(ENTITY_TABLES)}")
    with db.connect() as c:
        row = c.execute(select(t).where(t.c.id == key)).mappings().first()
        if row is not None:
            return dict(row), None
        rows: list[dict[str, Any]] = []
        by = None
        k = lookup_key(entity)  # email (contact, lead), domain (account), a custom object's match key
        if k is not None and (v := k.normalise(key)) is not None:
            by = k.field
            rows = [dict(r) for r in c.execute(select(t).where(func.lower(t.c[by]) == v)).mappings()]
    best = _oldest_live(rows)
    if best is None:
        how = "id" if by is None else f"id or {by}"
        raise ExplainError(f"no {entity} with {how} {key!r}", status=1)
    note = None
    if len(rows) > 1:
        note = f"{len(rows)} {entity} records have {by} {key!r}; showing the oldest live one ({best['id']})"
    return best, note


def _fields_of(t: SqlTable) -> list[str]:
    return [c.name for c in t.c if c.name not in _NOT_FIELDS]


def _history(rows: list[Any], wanted: set[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {f: [] for f in wanted}
    for seq, op, source, fields, vendor_at, at in rows:
        fields = fields or {}
        accepted = fields.get("_accepted") or {}
        base = {"seq": seq, "at": at, "op": op, "source": source, "vendor_at": vendor_at}
        for f, change in fields.items():
            if f.startswith("_") or f not in wanted or not isinstance(change, list):
                continue
            why = accepted.get(f)
            if why is not None:
                rule, reason = why.get("rule"), why.get("reason")
            elif op == "create":
                rule, reason = None, f"new record: first value, from {source}"
            elif op == "merge":
                rule, reason = None, f"merged from {fields.get('_merged_from')}"
            elif op in ("archive", "merged"):
                rule, reason = None, fields.get("_reason")
            else:
                rule, reason = None, None
            out[f].append({**base, "accepted": True, "old": change[0], "value": change[1], "rule": rule,
                           "reason": reason})
        for f, r in (fields.get("_rejected") or {}).items():
            if f in wanted:
                out[f].append({**base, "accepted": False, "value": r.get("value"), "rule": r.get("rule"),
                               "reason": r.get("reason")})
        if op == "unlink" and "archived_at" in wanted:
            out["archived_at"].append({**base, "accepted": False, "value": None, "rule": None,
                                       "reason": fields.get("_reason")})
    return out


def explain_doc(db: Engine, rules: Rules, entity: str, key: str, field: str | None = None) -> dict[str, Any]:
    """`{"entity", "id", "fields": {field: {"value", "source", "rule", "history"}}}`."""
    row, _note = find_entity(db, entity, key)
    return _doc(db, rules, entity, row, field)


def _doc(db: Engine, rules: Rules, entity: str, row: dict[str, Any], field: str | None) -> dict[str, Any]:
    t = ENTITY_TABLES[entity]
    names = _fields_of(t)
    if field is not None and field not in names:
        raise ExplainError(f"{entity} has no field {field!r}: use one of {', '.join(names)}")
    wanted = [field] if field is not None else names
    cl = change_log
    with db.connect() as c:
        # a record's history includes that of the records merged into it (hub.merge)
        ids = [row["id"], *merged_ids(c, entity, row["id"])]
        log = c.execute(select(cl.c.seq, cl.c.op, cl.c.source, cl.c.fields, cl.c.vendor_at, cl.c.at)
                        .where(cl.c.entity == entity, cl.c.entity_id.in_(ids)).order_by(cl.c.seq)).all()
    history = _history(list(log), set(wanted))
    prov = row.get("provenance") or {}
    fields: dict[str, Any] = {}
    for f in wanted:
        p = prov.get(f)
        value = row.get(f)
        if isinstance(p, list) and len(p) >= 3:
            source, rule = p[0], p[2]
        else:  # not set by the hub: the CRM's own value (or nobody's)
            source, rule = ("crm" if value is not None else None), rules.rule_for(entity, f).rule
        fields[f] = {"value": value, "source": source, "rule": rule, "history": history[f]}
    return {"entity": entity, "id": row["id"], "fields": fields}


def _when(v: Any) -> str | None:
    """A stored ISO time, to the second: `2026-01-01 12:00:00`."""
    return None if not isinstance(v, str) else v[:19].replace("T", " ")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, datetime):
        return v.isoformat()
    return str(v)


def render(console: Console, db: Engine, rules: Rules, entity: str, key: str, field: str | None = None) -> None:
    """The same answer for a person: per field its value, who set it and why, then each decision."""
    row, note = find_entity(db, entity, key)
    doc = _doc(db, rules, entity, row, field)
    prov = row.get("provenance") or {}
    if note:
        console.print(f"[yellow]{escape(note)}[/yellow]")
    state = f" (archived {_fmt(row.get('archived_at'))})" if row.get("archived_at") else ""
    console.print(f"[bold]{entity} {doc['id']}[/bold]{state}")
    for f, d in doc["fields"].items():
        console.print(f"[bold]{f}[/bold] = " + escape(repr(d["value"]) if d["value"] is not None else "-"),
                      highlight=False)
        p = prov.get(f)
        if isinstance(p, list) and len(p) >= 5:
            record = f" (record {p[4]})" if p[4] is not None else ""  # routing sets a value of no record
            console.print("    " + escape(f"set by {p[0]}{record} under {p[2]}; vendor time {_when(p[1]) or '-'}, "
                                         f"hub time {_when(p[3]) or '-'}"), highlight=False, style="dim")
        elif d["value"] is None:
            console.print("    " + escape(f"not set by any system; rule now: {d['rule']}"), highlight=False, style="dim")
        else:
            source = f"{d['source']}, " if d["source"] else ""
            console.print("    " + escape(f"{source}no provenance (not written by the hub); rule now: {d['rule']}"),
                          highlight=False, style="dim")
        for h in d["history"]:
            mark = "[green]accepted[/green]" if h["accepted"] else "[red]refused[/red] "
            what = f"{_fmt(h.get('old'))} -> {_fmt(h['value'])}" if h["accepted"] else _fmt(h["value"])
            rule = f" (rule: {h['rule']})" if h["rule"] else ""
            reason = f" — {h['reason']}" if h["reason"] else ""
            console.print(f"    {_when(_fmt(h['at']))}  {mark} "
                          + escape(f"{h['op']:<7} {h['source']}: {what}{rule}{reason}"), highlight=False)
