"""Activity ingest: every email, meeting, call and payment lands on the timeline the same way.

A page of `ActivityEvent`s (hub.sdk.activity) from any connector costs a fixed number of
statements: one look-up of the page's known versions, one of its activity rows, one of
contacts by the participants' addresses, one by their numbers, one per referenced entity
kind, one of the matched accounts' open opportunities (and for deletes and status-only
changes, one of the stored participants and one of the stored rows); then one insert per table.

- Participants are normalised here, once for every vendor: addresses lower-cased out of
  their display forms (`"Ann Lee" <Ann@Example.com>`), numbers to E.164. Addresses,
  numbers and `@domains` on the instance's `internal` list are the team's own users: they
  name the activity's actor and never match or create a contact.
- The activity's contact is the first participant that matches a contact, by role
  (from, caller, organizer, to, callee, attendee, cc, bcc), skipping internal ones; its
  account is the contact's, or the one the connector names in `refs`; its opportunity the
  one `refs` names, else the account's only open opportunity.
- Idempotent on (source, external_id): a redelivered event (same content) is a no-op. A
  changed one is a new version in hub.activity_versions; the activity row shows the
  latest by the vendor's change time, so versions arriving out of order never roll it back.
  A vendor delete is a version too (status `deleted`): history is never overwritten.
- A status-only event (`occurred_at` empty: the vendor said no more than the item's new status,
  as Google does of a cancelled meeting) is a new version of the stored activity with that
  status: its time, people and the rest stay as stored. Of an item the hub does not hold, or
  one already in that status, it is a no-op. A record and a delete of one item in a page: the
  record says what became of it.
- Participants that match no contact are kept with contact_id NULL; `relink` (run after
  every contact sync, and by `crmhub activities relink`) attaches them when the contact
  appears, and gives their activities a contact, its account and opportunity by the same rules.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parseaddr
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, delete, exists, func, select, update

from hub.ids import new_id
from hub.sdk.activity import _EVENT_FIELDS, ActivityEvent, Participant
from hub.transforms import MappingError, e164, timestamp
from state import repos
from state.bulk import Batch
from state.schema import activities, activity_participants, activity_versions, contacts, opportunities

__all__ = ["ROLE_ORDER", "ActivityIngest", "IngestOutcome", "Internal", "event_from_values", "relink", "timeline"]

#: whose activity it is: the first participant matching a contact, in this order of roles
ROLE_ORDER = ("from", "caller", "organizer", "to", "callee", "attendee", "cc", "bcc", "agent")
_ROLE_RANK = {r: i for i, r in enumerate(ROLE_ORDER)}
#: roles an internal user acts in (the activity's actor)
_ACTOR_ROLES = ("from", "organizer", "agent", "caller", "callee", "to")
_CLOSED = ("closed", "won", "lost")
#: (field, most characters its column holds): a longer value is the event's failure, not the page's
_EVENT_LIMITS = tuple((c.name, c.type.length) for c in (  # type: ignore[attr-defined]
    activities.c.type, activities.c.external_id, activities.c.direction, activities.c.status))
_PART_LIMITS = tuple((k, activity_participants.c[k].type.length)  # type: ignore[attr-defined]
                     for k in ("role", "email", "phone", "user_id"))
#: a participant as a version's data holds it
_PART_KEYS = ("role", "email", "phone", "user_id", "name", "response", "internal")
#: the payload marker of an activity queued for retry (so a replay needs no connector)
RETRY_MARK = "__activity__"


class Internal:
    """The instance's `internal` list: addresses, `@domains` and numbers of the team's own users."""

    def __init__(self, entries: Iterable[str] = ()):
        self.emails: set[str] = set()
        self.domains: set[str] = set()
        self.phones: set[str] = set()
        for e in entries:
            s = e.strip().lower()
            if s.startswith("@"):
                self.domains.add(s[1:])
            elif "@" in s:
                self.emails.add(s)
            elif (p := e164(s)) is not None:
                self.phones.add(p)

    def __contains__(self, p: tuple[str | None, str | None]) -> bool:
        email, phone = p
        if email is not None and (email in self.emails or email.rpartition("@")[2] in self.domains):
            return True
        return phone is not None and phone in self.phones


def _norm_email(v: str | None) -> tuple[str | None, str | None]:
    """(address, display name) out of any of the forms mail headers use."""
    if not v:
        return None, None
    name, addr = parseaddr(v)
    addr = addr.strip().lower()
    if addr.startswith("mailto:"):
        addr = addr[7:]
    return (addr if "@" in addr else None), (name or None)


def event_from_values(external_id: str, values: dict[str, Any], refs: dict[str, str], stream: str,
                      vendor_at: str | None) -> ActivityEvent:
    """An event from a YAML-mapped record (target: activity): `type`, `occurred_at`, `subject` ...
    as canonical fields, references (`account_id: {path, entity: account}`) as refs."""
    def iso(v: Any) -> str | None:
        t = timestamp(v)
        return None if t is None else t.isoformat()
    occurred = iso(values.get("occurred_at")) or vendor_at
    if occurred is None:
        raise MappingError("an activity needs occurred_at")
    parts = []
    for role in ("from", "to", "cc", "organizer", "attendee", "caller", "callee"):
        for key, kind in ((f"{role}_email", "email"), (f"{role}_phone", "phone")):
            v = values.get(key)
            for item in (v if isinstance(v, list) else [v] if v else []):
                parts.append(Participant(role=role, **{kind: str(item)}))
    entity_of = {"account_id": "account", "contact_id": "contact", "opportunity_id": "opportunity"}
    return ActivityEvent(
        type=str(values.get("type") or stream), external_id=external_id, occurred_at=occurred,
        participants=parts, ended_at=iso(values.get("ended_at")), direction=values.get("direction"),
        subject=values.get("subject"), status=values.get("status"), url=values.get("url"),
        updated_at=vendor_at, refs={entity_of.get(k, k): v for k, v in refs.items()},
        details={k: v for k, v in values.items() if k not in _EVENT_KEYS and v is not None},
    )


_EVENT_KEYS = {"type", "occurred_at", "ended_at", "direction", "subject", "status", "url"} | {
    f"{r}_{k}" for r in ("from", "to", "cc", "organizer", "attendee", "caller", "callee") for k in ("email", "phone")}


@dataclass
class _Norm:
    """One event after normalisation: its participants' keys, its digest and vendor time."""

    rec_id: str
    event: ActivityEvent
    parts: list[dict[str, Any]]
    digest: str
    vendor_at: datetime | None
    data: dict[str, Any] = field(default_factory=dict)
    status_only: bool = False  # filled from the stored activity at write time


@dataclass
class IngestOutcome:
    written: int = 0  # activities created or changed (a new applied version)
    stale: int = 0  # versions older than the row's: kept in history, not applied
    duplicates: int = 0
    succeeded_ids: list[str] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


class ActivityIngest:
    """Writes activity events of one connector instance (its name is their `source`)."""

    def __init__(self, source: str, internal: Iterable[str] = ()):
        self.source = source
        self.internal = Internal(internal)
        self._ref_cache: dict[str, dict[str, str]] = {}

    # -- normalising (no database) ---------------------------------------------------------------

    def normalise(self, event: ActivityEvent, parts: list[dict[str, Any]] | None = None) -> _Norm:
        """`parts`: participants already normalised (an activity restated from the store)."""
        if event.occurred_at == "":
            if not event.status:
                raise MappingError("an event without occurred_at (a status-only change) needs a status")
            vendor_at = timestamp(event.updated_at) if event.updated_at else None
            return _Norm(event.external_id, event, [], "", vendor_at, status_only=True)
        if parts is None:
            parts = []
            for p in event.participants:
                email, name = _norm_email(p.email)
                phone = e164(p.phone) if p.phone else None
                parts.append({"role": p.role, "email": email, "phone": phone, "user_id": p.user_id,
                              "name": p.name or name, "response": p.response,
                              "internal": (email, phone) in self.internal})
        if event.occurred_at is None or timestamp(event.occurred_at) is None:
            raise MappingError("an activity needs occurred_at")
        for f, n in _EVENT_LIMITS:
            v = getattr(event, f)
            if v.__class__ is str and len(v) > n:
                raise MappingError(f"{f} is {len(v)} characters long; an activity's {f} holds at most {n}")
        for part in parts:
            for f, n in _PART_LIMITS:
                v = part[f]
                if v.__class__ is str and len(v) > n:
                    raise MappingError(f"participant {f} is {len(v)} characters long; at most {n} are kept")
        data = {name: getattr(event, name) for name in _EVENT_FIELDS}
        data["participants"] = parts
        digest = hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()
        vendor_at = timestamp(event.updated_at) if event.updated_at else None
        return _Norm(event.external_id, event, parts, digest, vendor_at, data)

    # -- writing -----------------------------------------------------------------------------------

    def prepare(self, ev: ActivityEvent) -> _Norm | dict[str, Any]:
        """The event normalised (no database: the engine runs this ahead, in its read thread),
        or the retry-queue failure that says why it cannot be."""
        try:
            return self.normalise(ev)
        except (MappingError, ValueError, TypeError) as err:
            return {"external_id": ev.external_id, "reason": f"activity rejected: {err}",
                    "payload": {RETRY_MARK: ev.as_dict()}}

    def write(self, batch: Batch, events: Sequence[ActivityEvent | _Norm], deleted: Sequence[str],
              now: datetime) -> IngestOutcome:
        """Events as they come, or already through `prepare`."""
        out = IngestOutcome()
        norms: dict[str, _Norm] = {}
        for ev in events:
            n = ev if isinstance(ev, _Norm) else self.prepare(ev)
            if not isinstance(n, _Norm):
                out.failures.append(n)
                continue
            prev = norms.get(n.rec_id)
            # two versions of one item in a page: the later by vendor time is the row's
            if prev is None or (n.vendor_at or now) >= (prev.vendor_at or now):
                norms[n.rec_id] = n
        conn = batch.conn
        ids = sorted(set(norms) | set(deleted))
        if not ids:
            return out
        batch.flush()
        versions = self._versions(conn, ids)
        rows = self._rows(conn, ids)
        self._restate(conn, norms, deleted, rows, out)
        resolved = self._resolve(conn, list(norms.values()))
        new_rows, changed, part_rows, version_rows, replaced = [], [], [], [], []
        for ext, n in norms.items():
            known = versions.get(ext, [])
            row = rows.get(ext)
            current = row["vendor_updated_at"] if row else None
            latest = max(known, default=None)
            # a redelivery: the state the row shows now, or a version it has already moved past
            # (after a delete the row has no vendor time, so an item coming back applies)
            if latest is not None and (latest[1] == n.digest or (
                    current is not None and n.vendor_at is not None and n.vendor_at <= current
                    and any(d == n.digest for _v, d, _t in known))):
                out.duplicates += 1
                out.succeeded_ids.append(ext)
                continue
            version = latest[0] + 1 if latest is not None else 1
            applied = row is None or n.vendor_at is None or current is None or n.vendor_at >= current
            version_rows.append({"source": self.source, "external_id": ext, "version": version,
                                 "vendor_updated_at": n.vendor_at, "recorded_at": now, "applied": applied,
                                 "data": n.data, "digest": n.digest})
            out.succeeded_ids.append(ext)
            if not applied:
                out.stale += 1
                continue
            contact_id, account_id, opp_id, actor, matched = resolved[ext]
            ev = n.event
            values = {"type": ev.type, "account_id": account_id, "contact_id": contact_id,
                      "opportunity_id": opp_id, "actor_id": actor, "occurred_at": timestamp(ev.occurred_at),
                      "ended_at": timestamp(ev.ended_at) if ev.ended_at else None, "direction": ev.direction,
                      "subject": ev.subject, "status": ev.status, "url": ev.url, "version": version,
                      "vendor_updated_at": n.vendor_at, "dedupe_key": _dedupe_key(ev),
                      "payload": {k: v for k, v in (("duration_s", ev.duration_s), ("body_excerpt", ev.body_excerpt),
                                                    ("details", ev.details or None), ("refs", ev.refs or None))
                                  if v is not None}}
            if row is None:
                aid = new_id()
                new_rows.append({"id": aid, "source": self.source, "external_id": ext, "recorded_at": now, **values})
            else:
                aid = row["id"]
                changed.append({"b_id": aid, **values})
                replaced.append(aid)
            for p, cid in zip(n.parts, matched, strict=True):
                part_rows.append({"activity_id": aid, **p, "contact_id": cid})
            out.written += 1
        if new_rows:
            new_rows = self._drop_known_elsewhere(conn, new_rows, part_rows, out)
        batch.insert_rows(activities, new_rows)
        batch.flush()
        if changed:
            stmt = update(activities).where(activities.c.id == bindparam("b_id"))
            conn.execute(stmt, changed)
        if replaced:
            for chunk in repos.parts(conn, replaced):
                conn.execute(delete(activity_participants).where(repos.among(conn, activity_participants.c.activity_id, chunk)))
        batch.insert_rows(activity_participants, part_rows)
        batch.insert_rows(activity_versions, version_rows)
        return out

    def _drop_known_elsewhere(self, conn: Connection, new_rows: list[dict[str, Any]],
                              part_rows: list[dict[str, Any]], out: IngestOutcome) -> list[dict[str, Any]]:
        """New rows whose item another connector already brought (same dedupe key) are not added."""
        keys = sorted({r["dedupe_key"] for r in new_rows if r.get("dedupe_key")})
        if not keys:
            return new_rows
        a = activities.c
        known: set[str] = set()
        for chunk in repos.parts(conn, keys):
            known.update(conn.execute(select(a.dedupe_key).where(repos.among(conn, a.dedupe_key, chunk))).scalars())
        if not known:
            return new_rows
        dropped = {r["id"] for r in new_rows if r.get("dedupe_key") in known}
        out.written -= len(dropped)
        out.duplicates += len(dropped)
        part_rows[:] = [p for p in part_rows if p["activity_id"] not in dropped]
        return [r for r in new_rows if r["id"] not in dropped]

    def _versions(self, conn: Connection, ids: list[str]) -> dict[str, list[tuple[int, str, datetime | None]]]:
        v = activity_versions.c
        out: dict[str, list[tuple[int, str, datetime | None]]] = {}
        for chunk in repos.parts(conn, ids):
            q = select(v.external_id, v.version, v.digest, v.vendor_updated_at).where(
                v.source == self.source, repos.among(conn, v.external_id, chunk))
            for ext, ver, digest, at in conn.execute(q):
                out.setdefault(ext, []).append((ver, digest, at))
        return out

    def _rows(self, conn: Connection, ids: list[str]) -> dict[str, dict[str, Any]]:
        a = activities.c
        out = {}
        for chunk in repos.parts(conn, ids):
            q = select(a.id, a.external_id, a.type, a.subject, a.status, a.occurred_at, a.vendor_updated_at).where(
                a.source == self.source, repos.among(conn, a.external_id, chunk))
            for r in conn.execute(q).mappings():
                out[r["external_id"]] = dict(r)
        return out

    def _restate(self, conn: Connection, norms: dict[str, _Norm], deleted: Sequence[str],
                 rows: dict[str, dict[str, Any]], out: IngestOutcome) -> None:
        """Deletes and status-only events as new versions of the stored activities (in `norms`)."""
        spoken = set(norms)  # a record and a delete of one item in a page: the record wins
        # a vendor delete: a version with status `deleted`, history kept
        gone = [e for e in dict.fromkeys(deleted)
                if e not in spoken and e in rows and rows[e]["status"] != "deleted"]
        changed: list[tuple[str, _Norm]] = []
        for ext, n in list(norms.items()):
            if n.status_only:
                del norms[ext]
                row = rows.get(ext)
                if row is None or row["status"] == n.event.status:
                    out.duplicates += 1
                    out.succeeded_ids.append(ext)
                else:
                    changed.append((ext, n))
        if not gone and not changed:
            return
        parts = self._stored_parts(conn, [rows[e]["id"] for e in gone] + [rows[e]["id"] for e, _n in changed])
        for ext in gone:
            row = rows[ext]
            # no vendor time: a delete always applies, and so does the next live version
            # read after it (an item moved between two folders a connector reads)
            ev = ActivityEvent(type=row["type"], external_id=ext, occurred_at=row["occurred_at"].isoformat(),
                               status="deleted", subject=row["subject"])
            norms[ext] = self.normalise(ev, parts.get(row["id"], []))
        if not changed:
            return
        a = activities.c
        stored: dict[str, dict[str, Any]] = {}
        for chunk in repos.parts(conn, [rows[e]["id"] for e, _n in changed]):
            q = select(a.id, a.ended_at, a.direction, a.url, a.payload).where(repos.among(conn, a.id, chunk))
            stored.update((r["id"], dict(r)) for r in conn.execute(q).mappings())
        for ext, n in changed:
            row = rows[ext]
            more = stored[row["id"]]
            pay = more["payload"] or {}
            ev = ActivityEvent(type=row["type"], external_id=ext, occurred_at=row["occurred_at"].isoformat(),
                               ended_at=more["ended_at"].isoformat() if more["ended_at"] else None,
                               duration_s=pay.get("duration_s"), direction=more["direction"], subject=row["subject"],
                               status=n.event.status, url=more["url"], body_excerpt=pay.get("body_excerpt"),
                               updated_at=n.event.updated_at, refs=pay.get("refs") or {},
                               details=pay.get("details") or {})
            norms[ext] = self.normalise(ev, parts.get(row["id"], []))

    def _stored_parts(self, conn: Connection, activity_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        p = activity_participants.c
        out: dict[str, list[dict[str, Any]]] = {}
        for chunk in repos.parts(conn, activity_ids):
            q = (select(p.activity_id, *(p[k] for k in _PART_KEYS))
                 .where(repos.among(conn, p.activity_id, chunk))
                 .order_by(p.activity_id, _role_rank_sql(p.role), p.email, p.phone, p.user_id))
            for aid, *values in conn.execute(q):
                # plain str keys: a row's are str subclasses, which orjson refuses as keys
                out.setdefault(aid, []).append(dict(zip(_PART_KEYS, values, strict=True)))
        return out

    def _resolve(self, conn: Connection, norms: list[_Norm]) -> dict[str, tuple[Any, ...]]:
        """Per event: (contact_id, account_id, opportunity_id, actor, [contact_id per participant])."""
        emails = sorted({p["email"] for n in norms for p in n.parts if p["email"] and not p["internal"]})
        phones = sorted({p["phone"] for n in norms for p in n.parts if p["phone"] and not p["internal"]})
        c = contacts.c
        by_email: dict[str, tuple[str, str | None]] = {}
        by_phone: dict[str, tuple[str, str | None]] = {}
        for keys, col, target in ((emails, func.lower(c.email), by_email), (phones, c.phone, by_phone)):
            for chunk in repos.parts(conn, keys):
                q = (select(col, c.id, c.account_id).where(repos.among(conn, col, chunk), c.archived_at.is_(None))
                     .order_by(c.created_at.desc(), c.id.desc()))
                for key, cid, acc in conn.execute(q):
                    target[key] = (cid, acc)  # ordered newest first: the oldest wins, as in hub.identity
        refs = {e: sorted({n.event.refs[e] for n in norms if n.event.refs.get(e)})
                for e in ("contact", "account", "opportunity")}
        linked: dict[str, dict[str, str]] = {}
        for entity, ext_ids in refs.items():
            cache = self._ref_cache.setdefault(entity, {})
            missing = [x for x in ext_ids if x not in cache]
            if missing:
                cache.update((x, eid) for x, (eid, _d) in
                             repos.lookup_links(conn, self.source, entity, missing).items())
            linked[entity] = cache
        ref_contacts = sorted({linked["contact"][x] for x in refs["contact"] if x in linked["contact"]})
        contact_account: dict[str, str | None] = {}
        for chunk in repos.parts(conn, ref_contacts):
            contact_account.update(conn.execute(select(c.id, c.account_id).where(repos.among(conn, c.id, chunk))).all())
        out: dict[str, tuple[Any, ...]] = {}
        for n in norms:
            matched: list[str | None] = []
            best: tuple[int, str, str | None] | None = None
            actor = None
            for p in n.parts:
                hit = None if p["internal"] else (by_email.get(p["email"]) if p["email"] else None) or (
                    by_phone.get(p["phone"]) if p["phone"] else None)
                matched.append(hit[0] if hit else None)
                rank = _ROLE_RANK.get(p["role"], 99)
                if hit and (best is None or rank < best[0]):
                    best = (rank, hit[0], hit[1])
                if p["internal"] and actor is None and p["role"] in _ACTOR_ROLES:
                    actor = (p["user_id"] or p["email"] or p["phone"] or "")[:64] or None
            ev = n.event
            contact_id = linked["contact"].get(ev.refs.get("contact", "")) if ev.refs.get("contact") else None
            account_id = linked["account"].get(ev.refs.get("account", "")) if ev.refs.get("account") else None
            if contact_id is not None:
                account_id = account_id or contact_account.get(contact_id)
            elif best is not None:
                contact_id, account_id = best[1], account_id or best[2]
            opp = linked["opportunity"].get(ev.refs.get("opportunity", "")) if ev.refs.get("opportunity") else None
            out[n.rec_id] = (contact_id, account_id, opp, actor, matched)
        sole = _sole_open_opportunity(conn, sorted({v[1] for v in out.values() if v[1] and not v[2]}))
        for k, (cid, acc, opp, actor, matched) in out.items():
            if opp is None and acc in sole:
                out[k] = (cid, acc, sole[acc], actor, matched)
        return out


def _sole_open_opportunity(conn: Connection, account_ids: Sequence[str]) -> dict[str, str]:
    """Account -> its open opportunity, for the accounts that have exactly one (an unambiguous one)."""
    open_opps: dict[str, list[str]] = {}
    o = opportunities.c
    for chunk in repos.parts(conn, account_ids):
        q = select(o.account_id, o.id, o.stage).where(repos.among(conn, o.account_id, chunk), o.archived_at.is_(None))
        for acc, oid, stage in conn.execute(q):
            if not any(w in (stage or "").lower() for w in _CLOSED):
                open_opps.setdefault(acc, []).append(oid)
    return {acc: oids[0] for acc, oids in open_opps.items() if len(oids) == 1}


def _dedupe_key(ev: ActivityEvent) -> str | None:
    """An item's identity across vendors: an email's Message-ID (`details["message_id"]`)."""
    mid = ev.details.get("message_id") if ev.details else None
    if not isinstance(mid, str) or not mid.strip():
        return None
    return f"{ev.type}:{mid.strip().strip('<>').lower()}"[:255]


def relink(conn: Connection) -> int:
    """Attach participants that matched no contact to contacts that exist now; then give their
    activities a contact (and its account) where they had none, and an opportunity where they had
    none by the rule of a match at ingest (the account's only open one). Returns participants attached."""
    p, c, a = activity_participants.c, contacts.c, activities.c
    attached = 0
    for key, col in ((p.email, func.lower(c.email)), (p.phone, c.phone)):
        match = (select(c.id).where(col == key, c.archived_at.is_(None))
                 .order_by(c.created_at, c.id).limit(1).scalar_subquery())
        stmt = (update(activity_participants)
                .where(p.contact_id.is_(None), p.internal.is_(False), key.is_not(None),
                       exists(select(c.id).where(col == key, c.archived_at.is_(None))))
                .values(contact_id=match))
        attached += conn.execute(stmt).rowcount or 0
    if attached:
        rank = _role_rank_sql(p.role)
        first = (select(p.contact_id).where(p.activity_id == a.id, p.contact_id.is_not(None))
                 .order_by(rank).limit(1).scalar_subquery())
        # what each activity given a contact or an account holds after it: (account, opportunity)
        touched: dict[str, tuple[str | None, str | None]] = {}
        for stmt in (update(activities).where(
                a.contact_id.is_(None),
                exists(select(p.activity_id).where(p.activity_id == a.id, p.contact_id.is_not(None)))
        ).values(contact_id=first), update(activities).where(
                a.account_id.is_(None), a.contact_id.is_not(None),
                exists(select(c.id).where(c.id == a.contact_id, c.account_id.is_not(None)))
        ).values(account_id=select(c.account_id).where(c.id == a.contact_id).scalar_subquery())):
            touched.update((aid, (acc, opp)) for aid, acc, opp in
                           conn.execute(stmt.returning(a.id, a.account_id, a.opportunity_id)))
        _relink_opportunities(conn, {aid: acc for aid, (acc, opp) in touched.items() if acc and opp is None})
    return attached


def _relink_opportunities(conn: Connection, account_of: dict[str, str]) -> None:
    """Activities relink gave a contact or an account, and that have no opportunity: their
    account's only open one, as a match at ingest gives (`_sole_open_opportunity`)."""
    sole = _sole_open_opportunity(conn, sorted(set(account_of.values())))
    params = [{"b_id": aid, "b_opp": sole[acc]} for aid, acc in account_of.items() if acc in sole]
    if params:
        a = activities.c
        stmt = (update(activities).where(a.id == bindparam("b_id"), a.opportunity_id.is_(None))
                .values(opportunity_id=bindparam("b_opp")))
        conn.execute(stmt, params)


def _role_rank_sql(role: Any) -> Any:
    from sqlalchemy import case
    return case({r: i for i, r in enumerate(ROLE_ORDER)}, value=role, else_=99)


def timeline(conn: Connection, contact_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """A contact's activities in time order: its own, and those it took part in."""
    a, p = activities.c, activity_participants.c
    involved = select(p.activity_id).where(p.contact_id == contact_id)
    q = (select(a.id, a.type, a.source, a.occurred_at, a.ended_at, a.direction, a.subject, a.status, a.version,
                a.account_id, a.opportunity_id, a.url)
         .where((a.contact_id == contact_id) | a.id.in_(involved))
         .order_by(a.occurred_at, a.id).limit(limit))
    return [dict(r) for r in conn.execute(q).mappings()]

