"""The Salesforce sandbox's org: records per object, the recycle bin and delete log, query locators,
the daily API counter. Thread-safe; the clock is injectable (real time by default).

Timestamps are kept to the second, as Salesforce's documented examples show them
(``2024-06-01T12:00:00.000+0000``), and generated records share seconds (`per_second`), so a
reader that orders by ``SystemModstamp`` alone meets the tie every real bulk load produces.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from connectors.salesforce.sandbox_soql import Query, SoqlSyntaxError, parse_query, parse_time, sort_key

__all__ = ["KEY_PREFIX", "SandboxError", "SandboxStore", "case_safe", "format_time", "sf_id"]

AUDIT = ("Id", "OwnerId", "CreatedDate", "LastModifiedDate", "SystemModstamp", "IsDeleted")
SCHEMA: dict[str, tuple[str, ...]] = {
    "Account": (*AUDIT, "Name", "Website", "Industry", "Type", "Phone"),
    "Contact": (*AUDIT, "AccountId", "FirstName", "LastName", "Email", "Phone", "Title"),
    "Lead": (*AUDIT, "FirstName", "LastName", "Email", "Phone", "Company", "LeadSource", "Status"),
    "Opportunity": (*AUDIT, "AccountId", "Name", "StageName", "Amount", "CloseDate"),
    "Task": (*AUDIT, "Subject", "Status", "Priority", "ActivityDate", "WhoId", "WhatId", "AccountId", "TaskSubtype",
             "CallType", "CallDurationInSeconds", "CompletedDateTime", "Description", "IsArchived"),
    "Event": (*AUDIT, "Subject", "StartDateTime", "EndDateTime", "DurationInMinutes", "IsAllDayEvent", "Location",
              "WhoId", "WhatId", "AccountId", "Description", "IsArchived"),
}
REQUIRED = {"Account": ("Name",), "Contact": ("LastName",), "Lead": ("LastName", "Company"),
            "Opportunity": ("Name", "StageName", "CloseDate")}
KEY_PREFIX = {"Account": "001", "Contact": "003", "Lead": "00Q", "Opportunity": "006", "Task": "00T",
              "Event": "00U"}
_CHECKSUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
RECYCLE_DAYS = 15
REPLICATION_DAYS = 30


class SandboxError(Exception):
    """An API error as Salesforce answers it: status plus ``[{"message", "errorCode"}]``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> list[dict[str, str]]:
        return [{"message": self.message, "errorCode": self.code}]


def case_safe(base: str) -> str:
    """The 18-character form of a 15-character Id: one suffix letter per 5 characters, whose bits
    say which of them are upper case."""
    suffix = ""
    for chunk in (base[0:5], base[5:10], base[10:15]):
        bits = sum(1 << i for i, ch in enumerate(chunk) if "A" <= ch <= "Z")
        suffix += _CHECKSUM[bits]
    return base + suffix


def sf_id(prefix: str, n: int) -> str:
    """An 18-character Id: key prefix, a counter, and Salesforce's case-safe checksum suffix."""
    return case_safe(f"{prefix}Dn{n:010d}")


def format_time(d: datetime) -> str:
    return d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


@dataclass
class _Locator:
    sobject: str
    rows: list[dict[str, Any]]
    batch: int


@dataclass
class _Failure:
    status: int
    retry_after: int | None = None
    html: bool = False


@dataclass
class _Org:
    records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    bin: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # the recycle bin
    delete_log: dict[str, list[tuple[str, datetime]]] = field(default_factory=dict)
    purged_at: dict[str, datetime] = field(default_factory=dict)


_FIRST = ["Ann", "Bo", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea", "Mo", "Nia"]
_LAST = ["Lee", "O'Brien", "Smith", "Garcia", "Novak", "Okafor", "Tanaka", "Weber", "Rossi", "Khan"]
_STAGES = ["Prospecting", "Qualification", "Proposal/Price Quote", "Negotiation/Review", "Closed Won"]


class SandboxStore:
    """One org. `bad_every` N: every Nth contact gets an Email the hub's mapping must reject."""

    def __init__(self, *, accounts: int = 50, contacts: int = 450, leads: int = 40, opportunities: int = 60,
                 tasks: int = 40, events: int = 30, custom_objects: Iterable[str] = (), seed: int = 7,
                 base_time: datetime = datetime(2026, 1, 5, 9, 0, tzinfo=UTC), per_second: int = 7,
                 bad_every: int = 0, daily_limit: int = 100_000, api_used: int = 0,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._lock = threading.RLock()
        self.clock = clock or (lambda: datetime.now(UTC).replace(microsecond=0))
        self.schema = {**SCHEMA, **{n: (*AUDIT, "Name") for n in custom_objects}}
        self.prefix = {**KEY_PREFIX, **{n: f"a{i:02d}" for i, n in enumerate(custom_objects)}}
        self.org = _Org()
        for name in self.schema:
            self.org.records[name] = {}
            self.org.bin[name] = {}
            self.org.delete_log[name] = []
        self.bad_every = bad_every
        self.daily_limit, self.api_used = daily_limit, api_used
        self.enforce_limit = True
        self._counter = 0
        self._locators: dict[str, _Locator] = {}
        self._locator_seq = 0
        self._failures: list[_Failure] = []
        self.stats: dict[str, int] = {}
        self._generate(random.Random(seed), base_time, per_second, accounts, contacts, leads, opportunities,
                       tasks, events)

    # -- generation ------------------------------------------------------------------------------

    def _new_id(self, sobject: str) -> str:
        self._counter += 1
        return sf_id(self.prefix[sobject], self._counter)

    def _put(self, sobject: str, at: datetime, values: dict[str, Any]) -> str:
        rid = self._new_id(sobject)
        stamp = format_time(at)
        rec: dict[str, Any] = {name: None for name in self.schema[sobject]}
        rec.update({"Id": rid, "OwnerId": "005Dn0000000001AAA", "CreatedDate": stamp, "LastModifiedDate": stamp,
                    "SystemModstamp": stamp, "IsDeleted": False, **values})
        self.org.records[sobject][rid] = rec
        return rid

    def _generate(self, rnd: random.Random, base: datetime, per_second: int, accounts: int, contacts: int,
                  leads: int, opportunities: int, tasks: int, events: int) -> None:
        n = 0

        def at() -> datetime:
            nonlocal n
            n += 1
            return base + timedelta(seconds=(n - 1) // max(1, per_second))

        acc = [self._put("Account", at(), {"Name": f"Account {i} Ltd", "Website": f"www.account{i}.example",
                                           "Industry": rnd.choice(["Technology", "Retail", "Energy", None])})
               for i in range(accounts)]
        con = []
        for i in range(contacts):
            first, last = rnd.choice(_FIRST), rnd.choice(_LAST)
            email = f"{first.lower()}.{i}@account{i % max(1, accounts)}.example"
            if self.bad_every and (i + 1) % self.bad_every == 0:
                email = "not-an-email"
            con.append(self._put("Contact", at(), {"FirstName": first, "LastName": last, "Email": email,
                                                   "Phone": f"+1415555{i % 10000:04d}", "Title": "Buyer",
                                                   "AccountId": acc[i % len(acc)] if acc else None}))
        for i in range(leads):
            self._put("Lead", at(), {"FirstName": rnd.choice(_FIRST), "LastName": rnd.choice(_LAST),
                                     "Email": f"lead{i}@prospect{i}.example", "Company": f"Prospect {i}",
                                     "LeadSource": "Web", "Status": "Open - Not Contacted"})
        opp = [self._put("Opportunity", at(), {"Name": f"Deal {i}", "StageName": rnd.choice(_STAGES),
                                               "Amount": float(1000 * (i + 1)), "CloseDate": "2026-03-31",
                                               "AccountId": acc[i % len(acc)] if acc else None})
               for i in range(opportunities)]
        for i in range(tasks):
            day = (base + timedelta(days=i % 20)).date().isoformat()
            self._put("Task", at(), {"Subject": f"Call {i}", "Status": "Completed", "Priority": "Normal",
                                     "ActivityDate": day, "TaskSubtype": "Call", "CallType": "Outbound",
                                     "CallDurationInSeconds": 60 + i, "IsArchived": False,
                                     "WhoId": con[i % len(con)] if con else None,
                                     "WhatId": opp[i % len(opp)] if opp else None,
                                     "AccountId": acc[i % len(acc)] if acc else None})
        for i in range(events):
            start = base + timedelta(days=i % 20, hours=2)
            self._put("Event", at(), {"Subject": f"Meeting {i}", "StartDateTime": format_time(start),
                                      "EndDateTime": format_time(start + timedelta(minutes=30)),
                                      "DurationInMinutes": 30, "IsAllDayEvent": False, "IsArchived": False,
                                      "WhoId": con[i % len(con)] if con else None,
                                      "WhatId": opp[i % len(opp)] if opp else None,
                                      "AccountId": acc[i % len(acc)] if acc else None})

    # -- the harness's side (the vendor's users editing the org) ---------------------------------

    def ids(self, sobject: str) -> list[str]:
        with self._lock:
            return sorted(self.org.records[sobject])

    def get(self, sobject: str, rid: str) -> dict[str, Any] | None:
        with self._lock:
            rec = self.org.records[sobject].get(rid)
            return dict(rec) if rec else None

    def modify(self, sobject: str, ids: Iterable[str] | None = None, count: int = 0,
               values: dict[str, Any] | None = None) -> list[str]:
        """Change records now (oldest-stamped first when no ids are given); returns their ids."""
        with self._lock:
            live = self.org.records[sobject]
            if ids is None:
                ids = [r["Id"] for r in sorted(live.values(), key=lambda r: (r["SystemModstamp"], r["Id"]))][:count]
            stamp = format_time(self.clock())
            out = []
            for rid in ids:
                rec = live[rid]
                if values:
                    rec.update(values)
                elif sobject == "Contact":
                    rec["Title"] = f"{rec.get('Title') or ''}+"[-40:]
                rec["LastModifiedDate"] = rec["SystemModstamp"] = stamp
                out.append(rid)
            return out

    def create(self, sobject: str, values: dict[str, Any]) -> str:
        with self._lock:
            return self._put(sobject, self.clock(), values)

    def delete(self, sobject: str, ids: Iterable[str]) -> list[str]:
        """Delete to the recycle bin: gone from query, in queryAll with IsDeleted, in getDeleted's log."""
        with self._lock:
            now = self.clock()
            out = []
            for rid in ids:
                rec = self.org.records[sobject].pop(rid, None)
                if rec is None:
                    continue
                rec["IsDeleted"] = True
                rec["SystemModstamp"] = format_time(now)
                self.org.bin[sobject][rid] = rec
                self.org.delete_log[sobject].append((rid, now))
                out.append(rid)
            return out

    def purge_deletes(self, sobject: str | None = None) -> None:
        """Empty the recycle bin and the delete log now (an admin's purge, or 15 days passing):
        a getDeleted window that starts before now has expired."""
        with self._lock:
            now = self.clock()
            for name in [sobject] if sobject else list(self.schema):
                self.org.bin[name].clear()
                self.org.delete_log[name].clear()
                self.org.purged_at[name] = now

    def expire_locators(self) -> None:
        """Every open query locator dies (INVALID_QUERY_LOCATOR on its nextRecordsUrl)."""
        with self._lock:
            self._locators.clear()

    def fail_next(self, n: int, status: int = 503, retry_after: int | None = None, html: bool = False) -> None:
        with self._lock:
            self._failures.extend(_Failure(status, retry_after, html) for _ in range(n))

    def take_failure(self) -> _Failure | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def count(self, kind: str) -> None:
        with self._lock:
            self.stats[kind] = self.stats.get(kind, 0) + 1
            self.api_used += 1

    def reset_stats(self) -> None:
        with self._lock:
            self.stats = {}

    # -- the API's side --------------------------------------------------------------------------

    def _check_fields(self, sobject: str, names: Iterable[str]) -> None:
        known = self.schema[sobject]
        for f in names:
            if f not in known and not (f.endswith("__c") and "." not in f):
                raise SandboxError(400, "INVALID_FIELD", f"No such column '{f}' on entity '{sobject}'. If you are "
                                   "attempting to use a custom field, be sure to append the '__c' after the custom "
                                   "field name.")

    def query(self, q: str, *, include_deleted: bool, batch: int) -> tuple[str, list[dict[str, Any]], int]:
        """Run a query; returns (sobject, every projected row, batch size) for the caller to page."""
        try:
            parsed: Query = parse_query(q)
        except SoqlSyntaxError as err:
            raise SandboxError(400, err.code, str(err)) from None
        with self._lock:
            if parsed.sobject not in self.schema:
                raise SandboxError(400, "INVALID_TYPE", f"sObject type '{parsed.sobject}' is not supported.")
            self._check_fields(parsed.sobject, [*parsed.fields, *parsed.where_fields,
                                                *(o[0] for o in parsed.order_by)])
            pool = list(self.org.records[parsed.sobject].values())
            if include_deleted:
                pool += list(self.org.bin[parsed.sobject].values())
            rows = [r for r in pool if parsed.where is None or parsed.where(r)]
            for f, desc, nulls_last in reversed(parsed.order_by):  # stable sorts, last key first
                none_rank = 0 if nulls_last == desc else 2
                rows.sort(key=lambda r, f=f, nr=none_rank: (nr, "") if r.get(f) is None  # type: ignore[misc]
                          else (1, sort_key(r.get(f))), reverse=desc)
            if parsed.limit is not None:
                rows = rows[:parsed.limit]
            projected = [{f: r.get(f) for f in parsed.fields} | {"__id": r["Id"]} for r in rows]
            return parsed.sobject, projected, batch

    def open_locator(self, sobject: str, rows: list[dict[str, Any]], batch: int) -> str:
        with self._lock:
            self._locator_seq += 1
            loc = f"01gDn{self._locator_seq:010d}AAA"
            self._locators[loc] = _Locator(sobject, rows, batch)
            return loc

    def locator(self, loc: str) -> _Locator:
        with self._lock:
            found = self._locators.get(loc)
            if found is None:
                raise SandboxError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
            return found

    def deleted(self, sobject: str, start: datetime, end: datetime) -> dict[str, Any]:
        with self._lock:
            if sobject not in self.schema:
                raise SandboxError(404, "NOT_FOUND", "The requested resource does not exist")
            now = self.clock()
            if start >= end:
                raise SandboxError(400, "INVALID_REPLICATION_DATE", "startDate must chronologically precede endDate")
            if start < now - timedelta(days=REPLICATION_DAYS):
                raise SandboxError(400, "INVALID_REPLICATION_DATE", "startDate cannot be more than 30 days ago")
            # seconds are ignored; coverage runs to the last whole minute (the docs' latestDateCovered)
            lo = start.replace(second=0)
            hi = min(end, now)
            gone = [{"id": rid, "deletedDate": format_time(at)} for rid, at in self.org.delete_log[sobject]
                    if lo <= at <= hi]
            # "the timestamp of the last physically deleted object": the last purge, or 15 days back
            earliest = max(self.org.purged_at.get(sobject, datetime.min.replace(tzinfo=UTC)),
                           now - timedelta(days=RECYCLE_DAYS))
            return {"deletedRecords": gone, "earliestDateAvailable": format_time(earliest),
                    "latestDateCovered": format_time(hi.replace(second=0))}

    def upsert(self, sobject: str, ext_field: str, records: list[Any], all_or_none: bool) -> list[dict[str, Any]]:
        with self._lock:
            if sobject not in self.schema:
                raise SandboxError(400, "INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
            if not ext_field.endswith("__c") and ext_field != "Id":
                raise SandboxError(400, "INVALID_FIELD", f"Field {ext_field} is not an External ID or an Id field")
            if len(records) > 200:
                raise SandboxError(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 "
                                   "records into this call")
            values = [r.get(ext_field) if isinstance(r, dict) else None for r in records]
            index: dict[Any, list[dict[str, Any]]] = {}  # one pass per call, not one per record
            for r in self.org.records[sobject].values():
                if r.get(ext_field) is not None:
                    index.setdefault(r[ext_field], []).append(r)
            plan: list[tuple[str, Any]] = []  # ("error", body) | ("create"|"update", (rec or None, fields))
            for rec in records:
                plan.append(self._plan_one(sobject, ext_field, rec, values, index))
            failed = any(kind == "error" for kind, _ in plan)
            out: list[dict[str, Any]] = []
            now = format_time(self.clock())
            for kind, item in plan:
                if kind == "error":
                    out.append({"success": False, "errors": [item]})
                elif all_or_none and failed:
                    out.append({"success": False, "errors": [{"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                                                              "message": "Record rolled back because not all "
                                                              "records were valid and the request was using "
                                                              "AllOrNone header", "fields": []}]})
                elif kind == "create":
                    rid = self._put(sobject, self.clock(), item[1])
                    out.append({"id": rid, "success": True, "errors": [], "created": True})
                else:
                    target, fields = item
                    target.update(fields)
                    target["LastModifiedDate"] = target["SystemModstamp"] = now
                    out.append({"id": target["Id"], "success": True, "errors": [], "created": False})
            return out

    def _plan_one(self, sobject: str, ext_field: str, rec: Any, values: list[Any],
                  index: dict[Any, list[dict[str, Any]]]) -> tuple[str, Any]:
        def error(code: str, message: str, fields: list[str] | None = None) -> tuple[str, Any]:
            return "error", {"statusCode": code, "message": message, "fields": fields or []}

        if not isinstance(rec, dict):
            return error("JSON_PARSER_ERROR", "a record must be an object")
        rtype = (rec.get("attributes") or {}).get("type")
        if rtype != sobject:
            return error("INVALID_TYPE", f"record type {rtype!r} does not match {sobject}")
        value = rec.get(ext_field)
        if value in (None, ""):
            return error("MISSING_ARGUMENT", f"{ext_field} not specified", [ext_field])
        if values.count(value) > 1:
            return error("DUPLICATE_VALUE", f"Duplicate external id specified: {value}", [ext_field])
        fields = {k: v for k, v in rec.items() if k != "attributes"}
        for name in fields:
            if name not in self.schema[sobject] and not name.endswith("__c"):
                return error("INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}", [name])
            if name in ("Id", "CreatedDate", "SystemModstamp", "LastModifiedDate", "IsDeleted") and name != ext_field:
                return error("INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: {name}.", [name])
        email = fields.get("Email")
        if email is not None and (not isinstance(email, str) or "@" not in email or " " in email):
            return error("INVALID_EMAIL_ADDRESS", f"Email: invalid email address: {email}", ["Email"])
        if "CloseDate" in fields and fields["CloseDate"] is not None:
            try:
                date.fromisoformat(str(fields["CloseDate"]))
            except ValueError:
                return error("JSON_PARSER_ERROR", f"Cannot deserialize instance of date from VALUE_STRING value "
                             f"{fields['CloseDate']}", ["CloseDate"])
        matches = index.get(value, [])
        if len(matches) > 1:
            return error("DUPLICATE_EXTERNAL_ID", f"{ext_field}: more than one record found for external id "
                         f"field: {[r['Id'] for r in matches]}", [ext_field])
        if matches:
            return "update", (matches[0], fields)
        missing = [f for f in REQUIRED.get(sobject, ()) if fields.get(f) in (None, "")]
        if missing:
            return error("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing)
        return "create", (None, fields)

    def limit_info(self) -> str:
        with self._lock:
            return f"api-usage={self.api_used}/{self.daily_limit}"

    def over_limit(self) -> bool:
        with self._lock:
            return self.enforce_limit and self.api_used >= self.daily_limit


def parse_param_time(value: str | None, name: str) -> datetime:
    if not value:
        raise SandboxError(400, "MISSING_ARGUMENT", f"{name} parameter is required")
    try:
        return parse_time(value)
    except ValueError:
        raise SandboxError(400, "INVALID_PARAMETER_VALUE", f"{name}: '{value}' is not a valid ISO-8601 datetime") \
            from None
