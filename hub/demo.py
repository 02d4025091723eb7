"""`crmhub demo`: the whole path of a record, offline, in a few seconds."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlalchemy import func, select

from hub.app import Hub
from hub.config import parse_config
from hub.identity import lookup_key
from hub.tables import table
from state.schema import ENTITY_TABLES, accounts, change_log, contacts, opportunities


def _counts(h: Hub) -> dict[str, int]:
    with h.db.connect() as c:
        return {t.name: c.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (accounts, contacts, opportunities)}


def _show(console: Console, title: str, results: list[Any]) -> None:
    t = table("stream", "read", "written", "deleted", "failed", "requests", "seconds", title=title)
    for r in results:
        t.add_row(f"{r.connector}.{r.stream}", f"{r.read:,}", f"{r.written:,}", f"{r.deleted:,}",
                  f"{r.failed:,}", f"{r.requests:,}", f"{r.seconds:.2f}")
    console.print(t)


def _timeline(console: Console, hub: Hub, hs: Any, work: Path) -> list[Any]:
    """6. Mail, a meeting and a call with one contact, from the Gmail, Google Calendar and Twilio
    sandboxes, land on that contact's timeline in time order."""
    from connectors.gmail.sandbox import GmailSandbox, GmailStore
    from connectors.google_calendar.sandbox import CalendarSandbox, CalendarStore
    from connectors.twilio.sandbox import ACCOUNT_SID, AUTH_TOKEN, TwilioStore
    from connectors.twilio.sandbox import SandboxServer as TwilioSandbox
    from hub.activities import timeline

    me, token = "rep@ourco.example", "ya29.demo-token"
    person = next(r for i in range(len(hs.ids("contacts")))
                  if (r := hs.raw("contacts", i)).get("email") and r.get("phone"))
    now = datetime.now(UTC).replace(microsecond=0)
    gmail, cal, calls = GmailStore({me: token}, 0), CalendarStore({me: token}, 0), TwilioStore(0)
    first = person.get("firstname") or "there"
    gmail.add_message(me, sender=f'"{first}" <{person["email"].upper()}>', to=[me], subject="Pricing question",
                      at_ms=int((now - timedelta(hours=6)).timestamp() * 1000))
    gmail.add_message(me, sender=f"Rep <{me}>", to=[person["email"]], subject="Re: Pricing question",
                      labels=["SENT"], at_ms=int((now - timedelta(hours=5)).timestamp() * 1000))
    cal.create(me, summary="Pricing walkthrough", start=now - timedelta(hours=3), end=now - timedelta(hours=2),
               attendees=[person["email"]])
    calls.add_call(now - timedelta(hours=1), status="completed", **{"from": person["phone"], "to": "+14155550100",
                                                                    "direction": "inbound"})
    with GmailSandbox(gmail) as g, CalendarSandbox(cal) as c, TwilioSandbox(calls) as tw:
        cfg = hub.cfg.model_copy(update={"connectors": {
            **hub.cfg.connectors,
            "gmail_demo": {"kind": "gmail", "base_url": g.url, "internal": ["@ourco.example"],
                           "mailboxes": [{"address": me, "access_token": token}]},
            "calendar_demo": {"kind": "google_calendar", "base_url": c.url, "internal": ["@ourco.example"],
                              "calendars": [{"address": me, "access_token": token}]},
            "twilio_demo": {"kind": "twilio", "base_url": tw.url, "internal": ["+14155550100"],
                            "auth": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}}}})
        h = Hub(cfg, db=hub.db).ready()
        results = h.engine.run("gmail_demo") + h.engine.run("calendar_demo") + h.engine.run("twilio_demo")
    with hub.db.connect() as conn:
        cid = conn.execute(select(contacts.c.id).where(func.lower(contacts.c.email) == person["email"].lower())
                           ).scalar_one()
        items = timeline(conn, cid)
    t = table("when", "type", "source", "direction", "status", "subject",
              title=f"6. {person['email']}'s timeline: mail, a meeting and a call, each matched to the contact")
    for a in items:
        t.add_row(f"{a['occurred_at']:%Y-%m-%d %H:%M}", a["type"], a["source"], a["direction"] or "",
                  a["status"] or "", a["subject"] or "")
    console.print(t)
    console.print(f"   (the email header wrote {person['email'].upper()}, the call came from {person['phone']}: "
                  "normalised, both find the same contact)", markup=False)
    return results


def run_demo(console: Console, *, contacts: int = 2000, workdir: str = ".crmhub/demo") -> int:
    from connectors.hubspot.sandbox import SandboxServer, SandboxStore

    work = Path(workdir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    store = SandboxStore(contacts=contacts, bad_every=997)
    with SandboxServer(store, token="demo-token") as server:
        console.print(f"[bold]1.[/bold] HubSpot sandbox on {server.url}: {contacts:,} contacts, "
                      f"{len(store.ids('companies')):,} companies, {len(store.ids('deals')):,} deals")
        cfg = parse_config({
            "database": f"sqlite:///{work / 'crmhub.db'}",
            "connectors": {"hubspot_demo": {"kind": "hubspot", "base_url": server.url,
                                            "auth": {"token": "demo-token"}, "search_lag_ms": 0}},
        }, "demo")
        h = Hub(cfg).ready()
        try:
            full = h.engine.run()
            _show(console, f"2. full sync into {work / 'crmhub.db'}", full)
            console.print(f"   canonical store: {_counts(h)}")
            failed = sum(r.failed for r in full)
            if failed:
                console.print(f"   {failed} record(s) failed mapping and wait in the retry queue "
                              "(`crmhub retries list` shows why); the sync went on.")
            changed = store.modify("contacts", count=5, properties={"jobtitle": "VP Revenue"})
            store.modify("companies", count=2, properties={"industry": "Software"})
            gone = store.modify("contacts", count=1)
            store.archive("contacts", gone)
            console.print(f"[bold]3.[/bold] changed in the sandbox: 5 contacts ({', '.join(changed)}), "
                          f"2 companies; archived contact {gone[0]}")
            inc = h.engine.run()
            _show(console, "4. incremental sync: only what changed moves", inc)
            with h.db.connect() as c:
                rows = c.execute(select(change_log.c.entity, change_log.c.entity_id, change_log.c.op,
                                        change_log.c.fields).where(change_log.c.run_id.in_(
                                            [r.run_id for r in inc])).order_by(change_log.c.seq).limit(4)).all()
                # each record by the key a person asks `crmhub explain` with (ids share a time prefix)
                names = {}
                for entity, eid, _op, _f in rows:
                    key = lookup_key(entity)
                    t = ENTITY_TABLES[entity]
                    if key is not None:
                        names[eid] = c.execute(select(t.c[key.field]).where(t.c.id == eid)).scalar() or eid
            console.print("[bold]5.[/bold] why did it change? the change log says:")
            for entity, eid, op, fields in rows:
                diff = ", ".join(f"{k}: {v[0]!r} -> {v[1]!r}" for k, v in (fields or {}).items()
                                 if k != "updated_at" and not k.startswith("_"))
                console.print(f"   {entity} {names.get(eid, eid)} {op} by hubspot_demo: {diff}", markup=False)
            tl = _timeline(console, h, store, work)
            ok = all(r.status == "ok" for r in full + inc + tl)
            console.print(("[green]demo finished[/green]" if ok else "[red]demo finished with errors[/red]")
                          + f"; try: CRMHUB_DATABASE_URL=sqlite:///{work / 'crmhub.db'} crmhub status")
            return 0 if ok else 1
        finally:
            h.close()
