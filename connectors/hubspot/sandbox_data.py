"""Data model of the HubSpot CRM v3 sandbox (the HTTP side is in ``sandbox.py``).

Nothing here holds N records. Record ``i`` of a type is generated on demand from
``(seed, type, i)``; only changes are stored (property overrides, new modified times, created and
archived records), so memory is O(changes) for stores of 1,000,000 records.

Ids and times:

- ids are numeric strings, ``ID_BASE[type] + i`` (contacts from 1001, companies from 5,000,001,
  deals from 9,000,001), and equal ``hs_object_id``;
- record ``i`` was last modified at ``base_time_ms + i * 1000``, which never decreases in ``i``
  (``same_ts_block=(start, count)`` gives records start..start+count-1 one shared time);
- ``modify``/``create``/``archive`` stamp records from a store clock that starts above every
  base time and moves 1 ms per stamp, so changed records sort after everything else.

Search exploits this: the unchanged ("base") records form a stream ordered by id *and* by
modified time, so a range on the modified time or on ``hs_object_id`` maps to an index range
(a binary search), which is merged with the short sorted list of changed records. Filters on
other properties are evaluated record by record over that candidate range (a full scan when
nothing narrows it), which is fine for small stores and slow for 1,000,000 records.
"""

from __future__ import annotations

import base64
import bisect
import functools
import heapq
import math
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from connectors.hubspot import sandbox_engagements as eng

__all__ = ["DEFAULT_PROPERTIES", "ID_BASE", "OBJECT_TYPES", "SandboxError", "SandboxStore"]

ENGAGEMENT_TYPES = eng.ENGAGEMENT_TYPES
OBJECT_TYPES = ("contacts", "companies", "deals", *ENGAGEMENT_TYPES)
_TYPE_NAMES = {"contacts": "contacts", "0-1": "contacts", "companies": "companies", "0-2": "companies",
               "deals": "deals", "0-3": "deals", **{t: t for t in ENGAGEMENT_TYPES},
               **{v: k for k, v in eng.OBJECT_TYPE_IDS.items()}}
ID_BASE = {"contacts": 1001, "companies": 5_000_001, "deals": 9_000_001, "calls": 20_000_001,
           "emails": 30_000_001, "meetings": 40_000_001, "notes": 50_000_001, "tasks": 60_000_001}
MODIFIED_PROPS = {"contacts": ("lastmodifieddate", "hs_lastmodifieddate"),
                  "companies": ("hs_lastmodifieddate",), "deals": ("hs_lastmodifieddate",),
                  **{t: ("hs_lastmodifieddate",) for t in ENGAGEMENT_TYPES}}
DATE_PROPS = frozenset({"createdate", "lastmodifieddate", "hs_lastmodifieddate", "closedate"}) | eng.DATE_PROPS
NUMBER_PROPS = frozenset({"hs_object_id", "amount", "associatedcompanyid"}) | eng.NUMBER_PROPS
READ_ONLY = frozenset({"hs_object_id", "createdate", "lastmodifieddate", "hs_lastmodifieddate", "hs_createdate"})


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split(","))


SCHEMA = {"contacts": _words("email,firstname,lastname,phone,jobtitle,lifecyclestage,company,associatedcompanyid,"
                             "hs_object_id,createdate,lastmodifieddate,hs_lastmodifieddate"),
          "companies": _words("name,domain,industry,hs_object_id,createdate,hs_lastmodifieddate"),
          "deals": _words("dealname,amount,dealstage,pipeline,closedate,hs_object_id,createdate,hs_lastmodifieddate"),
          **eng.SCHEMA}
# HubSpot's search guide lists these as the properties returned when none are requested.
DEFAULT_PROPERTIES = {
    "contacts": _words("createdate,email,firstname,hs_object_id,lastmodifieddate,lastname"),
    "companies": _words("createdate,domain,hs_lastmodifieddate,hs_object_id,name"),
    "deals": _words("amount,closedate,createdate,dealname,dealstage,hs_lastmodifieddate,hs_object_id,pipeline"),
    **eng.DEFAULT_PROPERTIES}
# Properties HubSpot's free-text ``query`` looks at (approximately).
QUERY_PROPS = {"contacts": _words("firstname,lastname,email,phone,company"), "companies": ("name", "domain"),
               "deals": ("dealname",), **eng.QUERY_PROPS}
ASSOC_TYPES = {("contacts", "companies"): "contact_to_company", ("companies", "contacts"): "company_to_contact",
               ("companies", "deals"): "company_to_deal", ("deals", "companies"): "deal_to_company",
               **{(t, to): f"{eng.SINGULAR[t]}_to_{eng.SINGULAR.get(to, to[:-1] if to != 'companies' else 'company')}"
                  for t in ENGAGEMENT_TYPES for to in ("contacts", "companies", "deals")}}

_M64 = (1 << 64) - 1
_DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIRST = _words("James,Mary,Wei,Priya,José,Zoë,Łukasz,Aoife,Mohammed,Chloé,Hiroshi,Fatima,Liam,Olga,Mateo,Amara,"
                "Noah,Sofia,Ethan,Ingrid,Kwame,Yuki,Lucas,Emma,Omar,Elena,Raj,Nora,Björn,Ana,Dmitri,Grace")
_LAST = _words("Smith,Garcia,O'Brien,Nguyen,Müller,Kowalski,Chen,Patel,Johnson,Silva,Dubois,Rossi,Kim,Haddad,"
               "Andersson,Okafor,Tanaka,Novak,Murphy,Fernández,van der Berg,Lee,Brown,Ivanova,Cohen,Santos,"
               "Walker,Schmidt,Jensen,Ali,Moreau,Singh")
_ASCII = str.maketrans("éëŁüáöó", "eeLuaoo", " '")
_FIRST_A = tuple(x.translate(_ASCII).lower() for x in _FIRST)
_LAST_A = tuple(x.translate(_ASCII).lower() for x in _LAST)
_LOCAL = ("{f}.{l}", "{f[0]}{l}", "{f}_{l}", "{l}.{f}")
_TITLES = _words("Account Executive,VP Sales,Head of Marketing,Software Engineer,CFO,Operations Manager,"
                 "Customer Success Manager,Product Manager,CEO,Procurement Lead,Data Analyst,HR Director")
_LIFECYCLE = _words("subscriber,lead,marketingqualifiedlead,salesqualifiedlead,opportunity,customer")
_ADJ = _words("Northwind,Blue,Summit,Bright,Acme,Silver,Pioneer,Atlas,Nimbus,Evergreen,Granite,Harbor,Quantum,"
              "Red Oak,Vertex,Lakeside")
_NOUN = _words("Logistics,Analytics,Foods,Robotics,Health,Capital,Energy,Software,Textiles,Media,Labs,Builders,"
               "Travel,Pharma,Networks,Retail")
_SUFFIX = _words("Inc.,LLC,Ltd,GmbH,Group,Co.,S.A.,")
_INDUSTRIES = _words("COMPUTER_SOFTWARE,FINANCIAL_SERVICES,HOSPITAL_HEALTH_CARE,RETAIL,LOGISTICS_AND_SUPPLY_CHAIN,"
                     "MARKETING_AND_ADVERTISING,REAL_ESTATE,CONSTRUCTION,EDUCATION_MANAGEMENT,"
                     "INFORMATION_TECHNOLOGY_AND_SERVICES,FOOD_BEVERAGES")
_STAGES = _words("appointmentscheduled,qualifiedtobuy,presentationscheduled,decisionmakerboughtin,contractsent,"
                 "closedwon,closedlost")
_PRODUCTS = _words("Annual licence,Pilot,Renewal,Expansion,Onboarding package,Support plan")
_FREE_MAIL = _words("gmail.com,outlook.com,yahoo.com,icloud.com")
# What modify() changes when no properties are given: rotate one property through its values.
_BUMP = {"contacts": ("jobtitle", _TITLES), "companies": ("industry", _INDUSTRIES), "deals": ("dealstage", _STAGES),
         "calls": ("hs_call_status", ("COMPLETED", "NO_ANSWER")), "emails": ("hs_email_status", ("SENT", "BOUNCED")),
         "meetings": ("hs_meeting_outcome", ("SCHEDULED", "COMPLETED", "CANCELED")),
         "notes": ("hs_note_body", ("<p>Updated.</p>", "<p>Updated again.</p>")),
         "tasks": ("hs_task_status", ("NOT_STARTED", "IN_PROGRESS", "COMPLETED"))}
_LO, _HI = -(1 << 62), 1 << 62


class SandboxError(Exception):
    """A request HubSpot would refuse; rendered by the HTTP layer as HubSpot's error shape."""

    def __init__(self, status: int, message: str, category: str = "VALIDATION_ERROR") -> None:
        super().__init__(message)
        self.status, self.message, self.category = status, message, category


def _mix(x: int) -> int:
    """splitmix64 finaliser: a fast, well-spread deterministic hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


@functools.lru_cache(maxsize=4096)
def _iso_day(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as HubSpot writes dates: ``2019-10-30T03:30:17.883Z``."""
    sec, milli = divmod(ms, 1000)
    day, sec = divmod(sec, 86_400)
    hour, sec = divmod(sec, 3600)
    minute, sec = divmod(sec, 60)
    return f"{_iso_day(day)}T{hour:02d}:{minute:02d}:{sec:02d}.{milli:03d}Z"


def parse_time(value: Any) -> int | None:
    """Epoch-ms string/int or ISO-8601 string to epoch ms; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    s = str(value).strip()
    if s.lstrip("-").isdigit():
        return int(s)
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def encode_after(last_id: int) -> str:
    """Opaque list cursor: URL-safe base64 of the last id returned (keyset, so edits don't shift it)."""
    return base64.urlsafe_b64encode(str(last_id).encode()).decode().rstrip("=")


def decode_after(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return int(raw.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise SandboxError(400, f"Invalid paging cursor 'after': {token!r}") from None


def resolve_type(object_type: str) -> str:
    try:
        return _TYPE_NAMES[object_type]
    except KeyError:
        raise SandboxError(400, f"Unable to infer object type from: {object_type}") from None


_PHONES = ("+1 ({a}) {b}-{c:04d}", "{a}-{b}-{c:04d}", "({a}) {b} {c:04d}", "{a}.{b}.{c:04d}", "+1{a}{b}{c:04d}",
           "+44 20 {b}{c:04d}", "+49 30 {b}{c:04d}", "{a}{b}{c:04d} ext. {a}", None, "001 {a} {b} {c:04d}")


def _phone(x: int) -> str | None:
    """A phone number in one of the formats people type (or none)."""
    fmt = _PHONES[(x >> 34) % 10]
    return None if fmt is None else fmt.format(a=200 + x % 800, b=100 + (x >> 10) % 900, c=(x >> 20) % 10000)


class SandboxStore:
    """Deterministic HubSpot-like records; thread-safe (the HTTP server runs in another thread).

    Example::

        store = SandboxStore(contacts=100_000, bad_every=1000)
        changed = store.modify("contacts", count=500)   # now sort after every other contact
        store.archive("contacts", changed[:10])         # listed only with archived=true
        store.fail_next(2, status=429, retry_after=1)   # the next two API calls are throttled
    """

    def __init__(self, contacts: int = 1000, companies: int | None = None, deals: int | None = None,
                 seed: int = 7, base_time_ms: int = 1_700_000_000_000, bad_every: int = 0,
                 same_ts_block: tuple[int, int] | None = None, *, engagements: int | None = None) -> None:
        companies = max(1, contacts // 10) if companies is None else companies
        deals = contacts // 5 if deals is None else deals
        engagements = contacts // 10 if engagements is None else engagements  # per engagement type
        if min(contacts, companies, deals, bad_every, engagements) < 0:
            raise ValueError("counts and bad_every must not be negative")
        self.seed, self.base_time_ms, self.bad_every = seed, base_time_ms, bad_every
        self._block = same_ts_block or (0, 0)
        self._n0 = {"contacts": contacts, "companies": companies, "deals": deals,
                    **{t: engagements for t in ENGAGEMENT_TYPES}}
        self._n = dict(self._n0)
        self._salt = {t: _mix(seed * 1_000_003 + k + 1) for k, t in enumerate(OBJECT_TYPES)}
        self.lock = threading.RLock()
        self._props: dict[str, dict[int, dict[str, Any]]] = {t: {} for t in OBJECT_TYPES}
        self._mod: dict[str, dict[int, int]] = {t: {} for t in OBJECT_TYPES}  # new modified time
        self._created: dict[str, dict[int, int]] = {t: {} for t in OBJECT_TYPES}  # create() time
        self._archived: dict[str, dict[int, int]] = {t: {} for t in OBJECT_TYPES}  # archivedAt
        self._arch_sorted: dict[str, list[int]] = {t: [] for t in OBJECT_TYPES}
        self._excl: dict[str, set[int]] = {t: set() for t in OBJECT_TYPES}  # base indices changed
        self._excl_sorted: dict[str, list[int]] = {t: [] for t in OBJECT_TYPES}
        self._over: dict[str, list[tuple[int, int]]] = {t: [] for t in OBJECT_TYPES}  # (time, i) live+changed
        self._known: dict[str, set[str]] = {t: set(SCHEMA[t]) for t in OBJECT_TYPES}
        self._clock = max([self._base_ts(n - 1) for n in self._n0.values() if n] or [base_time_ms])
        self._pick_seq = 0
        self._company_cache: dict[int, tuple[str, str]] = {}
        self._unique: dict[tuple[str, str], dict[str, int]] = {}  # (type, property) -> value -> index
        self._faults: list[list[Any]] = []
        self._stats: dict[str, int] = {}
        self._status: dict[str, int] = {}

    # ---- generation -------------------------------------------------------------------------
    def _base_ts(self, i: int) -> int:
        start, count = self._block
        if start <= i < start + count:
            i = start
        return self.base_time_ms + i * 1000

    def _company(self, j: int) -> tuple[str, str]:
        """(name, domain) of company ``j``, as generated (contacts and deals quote them)."""
        got = self._company_cache.get(j)
        if got is None:
            if len(self._company_cache) > 50_000:
                self._company_cache.clear()
            h = _mix(self._salt["companies"] ^ j)
            adj, noun, suffix = _ADJ[h & 15], _NOUN[(h >> 4) & 15], _SUFFIX[(h >> 8) & 7]
            got = self._company_cache[j] = (f"{adj} {noun} {suffix}".rstrip(),
                                            f"{adj}{noun}-{j + 1}.com".lower().replace(" ", ""))
        return got

    def _company_index(self, t: str, i: int) -> int | None:
        nc = self._n0["companies"]
        if t in ENGAGEMENT_TYPES:  # an engagement belongs to its contact's company
            k = self._contact_index(i)
            return None if k is None else self._company_index("contacts", k)
        return i % nc if nc and t in ("contacts", "deals") else None

    def _contact_index(self, i: int) -> int | None:
        """The contact engagement ``i`` is associated with."""
        n = self._n0["contacts"]
        return i % n if n else None

    def _deal_index(self, i: int) -> int | None:
        """The deal engagement ``i`` is associated with (every other engagement has one)."""
        n = self._n0["deals"]
        return (i // 2) % n if n and i % 2 == 0 else None

    def raw(self, t: str, i: int) -> dict[str, Any]:
        """All properties of record ``i``; dates as epoch-ms ints, everything else as strings."""
        return self._gen(t, i)[0]

    def _gen(self, t: str, i: int) -> tuple[dict[str, Any], int, int]:
        """(properties, createdAt ms, updatedAt ms) of record ``i``."""
        h = _mix(self._salt[t] ^ i)
        rid = ID_BASE[t] + i
        created = self._created[t].get(i)
        if created is None:
            created = self._base_ts(i) - (h >> 24) % (30 * _DAY_MS)
        modified = self._mod[t].get(i)
        if modified is None:
            modified = self._base_ts(i)
        j = self._company_index(t, i)
        d: dict[str, Any]
        if t == "contacts":
            first, last = _FIRST[h & 31], _LAST[(h >> 5) & 31]
            local = _LOCAL[(h >> 10) & 3].format(f=_FIRST_A[h & 31], l=_LAST_A[(h >> 5) & 31])
            cname, domain = (None, "") if j is None else self._company(j)
            if not domain or (h >> 16) % 5 == 0:
                domain = _FREE_MAIL[(h >> 14) & 3]
            d = {"email": f"{local}{rid}@{domain}", "firstname": first, "lastname": last,
                 "phone": _phone(_mix(h)), "jobtitle": _TITLES[(h >> 20) % 12] if (h >> 28) % 10 else None,
                 "lifecyclestage": _LIFECYCLE[(h >> 32) % 6], "company": cname,
                 "associatedcompanyid": None if j is None else str(ID_BASE["companies"] + j),
                 "lastmodifieddate": modified}
        elif t == "companies":
            name, domain = self._company(i)
            d = {"name": name, "domain": domain, "industry": _INDUSTRIES[(h >> 20) % 11] if (h >> 28) % 8 else None}
        elif t in ENGAGEMENT_TYPES:
            k = self._contact_index(i)
            # hs_timestamp: when it happened, before the record was last changed
            d = eng.engagement_props(t, h, created, lambda: None if k is None else self.raw("contacts", k))
            d["hs_createdate"] = created
            d["hs_object_id"] = str(rid)
            d["hs_lastmodifieddate"] = modified
            over = self._props[t].get(i)
            if over:
                d.update(over)
            return d, created, modified
        else:
            cents = 50_000 + (h >> 8) % 5_000_000
            d = {"dealname": f"{self._company(j)[0] if j is not None else 'Deal'} - {_PRODUCTS[h % 6]}",
                 "amount": str(cents // 100) if (h >> 40) & 1 else f"{cents // 100}.{cents % 100:02d}",
                 "dealstage": _STAGES[(h >> 32) % 7], "pipeline": "default",
                 "closedate": created + ((h >> 44) % 120) * _DAY_MS}
        d["hs_object_id"] = str(rid)
        d["createdate"] = created
        d["hs_lastmodifieddate"] = modified
        if t == "contacts" and self.bad_every and (i + 1) % self.bad_every == 0:
            d["email"], d["createdate"] = f"not-an-email-{rid}", "yesterday-ish"  # mapping must reject
        over = self._props[t].get(i)
        if over:
            d.update(over)
        return d, created, modified

    def render(self, t: str, i: int, props: Iterable[str], assoc: Iterable[str] = ()) -> dict[str, Any]:
        """Record ``i`` in HubSpot's SimplePublicObject(WithAssociations) shape."""
        raw, created, updated = self._gen(t, i)
        c_iso, u_iso = iso_ms(created), iso_ms(updated)
        known = self._known[t]
        out: dict[str, Any] = {}
        for p in props:
            if p in known:
                v = raw.get(p)
                if type(v) is int:
                    v = u_iso if v == updated else c_iso if v == created else iso_ms(v)
                out[p] = v
        obj: dict[str, Any] = {"id": str(ID_BASE[t] + i), "properties": out, "createdAt": c_iso,
                               "updatedAt": u_iso, "archived": i in self._archived[t]}
        if obj["archived"]:
            obj["archivedAt"] = iso_ms(self._archived[t][i])
        links = {to: res for to in assoc if (res := self._associations(t, i, to))}
        if links:
            obj["associations"] = links
        return obj

    def _associations(self, t: str, i: int, to: str) -> dict[str, Any] | None:
        to = _TYPE_NAMES.get(to, {"company": "companies", "contact": "contacts", "deal": "deals"}.get(to, to))
        kind = ASSOC_TYPES.get((t, to))
        if kind is None:
            return None
        idx: Iterable[int]
        if t in ENGAGEMENT_TYPES:
            j = (self._contact_index(i) if to == "contacts" else self._company_index(t, i) if to == "companies"
                 else self._deal_index(i))
            idx = () if j is None or j >= self._n[to] else (j,)
        elif t == "companies":  # the inverse of "record k belongs to company k % n_companies"
            nc = self._n0["companies"]
            if i >= nc:
                return None
            idx = range(i, self._n[to], nc)
        else:
            j = self._company_index(t, i)
            idx = () if j is None or j >= self._n["companies"] else (j,)
        arch = self._archived[to]
        live = islice((k for k in idx if k not in arch), 100)  # HubSpot pages long lists; we cut [U]
        found = [{"id": str(ID_BASE[to] + k), "type": kind} for k in live]
        return {"results": found} if found else None

    # ---- lookups ------------------------------------------------------------------------------
    def known(self, t: str) -> set[str]:
        """Property names of type ``t``: the schema plus any set through modify()/create()."""
        return self._known[t]

    def index_of(self, t: str, record_id: Any) -> int | None:
        """Index of an id of type ``t`` (any record ever created), or None."""
        try:
            i = int(str(record_id)) - ID_BASE[t]
        except ValueError:
            return None
        return i if 0 <= i < self._n[t] else None

    def get(self, object_type: str, record_id: Any, archived: bool = False) -> int | None:
        t = resolve_type(object_type)
        i = self.index_of(t, record_id)
        if i is None or (i in self._archived[t]) != archived:
            return None
        return i

    def ids(self, object_type: str, archived: bool = False) -> list[str]:
        """Every live (or archived) id, in id order: O(N), meant for tests on small stores."""
        t = resolve_type(object_type)
        arch = self._archived[t]
        return [str(ID_BASE[t] + i) for i in range(self._n[t]) if (i in arch) == archived]

    def find_by(self, object_type: str, prop: str, value: Any) -> int | None:
        """The live record whose ``prop`` equals ``value`` (case-insensitive), for upserts by a
        unique property. The first lookup per property scans the type once (O(N)); later ones are
        dictionary hits, kept current by create() and modify()."""
        t = resolve_type(object_type)
        want = str(value).strip().lower()
        with self.lock:
            index = self._unique.get((t, prop))
            if index is None:
                index = self._unique[(t, prop)] = {}
                for k in range(self._n[t]):
                    v = self.raw(t, k).get(prop)
                    if v not in (None, ""):
                        index.setdefault(str(v).strip().lower(), k)
            i = index.get(want)
            if i is None or i in self._archived[t] or str(self.raw(t, i).get(prop) or "").strip().lower() != want:
                return None
            return i

    def _reindex(self, t: str, idx: Iterable[int], props: dict[str, Any]) -> None:
        for (ut, prop), index in self._unique.items():
            if ut == t and props.get(prop) not in (None, ""):
                for i in idx:
                    index[str(props[prop]).strip().lower()] = i

    # ---- changes -----------------------------------------------------------------------------
    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def advance_clock(self, ms: int) -> int:
        """Move the store clock forward (changes made afterwards get later stamps)."""
        with self.lock:
            self._clock += max(0, ms)
            return self._clock

    def _indices(self, t: str, ids: Iterable[Any]) -> list[int]:
        out: dict[int, None] = {}  # ordered and de-duplicated
        for x in [ids] if isinstance(ids, str) else ids:
            i = self.index_of(t, x)
            if i is None or i in self._archived[t]:
                raise KeyError(f"no live {t} record with id {x!r}")
            out[i] = None
        return list(out)

    def _pick(self, t: str, count: int) -> list[int]:
        """``count`` live records in a deterministic pseudo-random order (a stride permutation)."""
        n = self._n[t]
        if n == 0 or count <= 0:
            return []
        self._pick_seq += 1
        h = _mix(self._salt[t] ^ (self._pick_seq << 40))
        start, stride = h % n, (h >> 32) % n or 1
        while math.gcd(stride, n) != 1:
            stride += 1
        arch = self._archived[t]
        out = []
        for k in range(n):
            i = (start + k * stride) % n
            if i not in arch:
                out.append(i)
                if len(out) == count:
                    break
        return out

    @staticmethod
    def _clean_props(properties: dict[str, Any] | None) -> dict[str, Any]:
        props: dict[str, Any] = {}
        for k, v in (properties or {}).items():
            if k in READ_ONLY:
                raise ValueError(f"{k} is read-only")
            if v is None:
                props[k] = None
            elif k in DATE_PROPS and (ms := parse_time(v)) is not None:
                props[k] = ms
            else:
                props[k] = str(v)
        return props

    def _stamp(self, t: str, idx: list[int], stamps: list[int]) -> None:
        """Record new modified times; keep the sorted structures the search relies on."""
        mod, excl, n0 = self._mod[t], self._excl[t], self._n0[t]
        again = {i for i in idx if i in mod}
        if again:
            self._over[t] = [e for e in self._over[t] if e[1] not in again]
        new_base = [i for i in idx if i < n0 and i not in excl]
        for i, ts in zip(idx, stamps, strict=True):
            mod[i] = ts
        self._over[t].extend(sorted(zip(stamps, idx, strict=True)))
        if new_base:
            excl.update(new_base)
            self._excl_sorted[t].extend(new_base)
            self._excl_sorted[t].sort()

    def modify(self, object_type: str, ids: Iterable[Any] | None = None, count: int | None = None,
               properties: dict[str, Any] | None = None, same_ts: bool = False) -> list[str]:
        """Change records (the given ids, or ``count`` deterministically chosen live ones).

        Sets ``properties`` or, without them, rotates one property (contacts: jobtitle, companies:
        industry, deals: dealstage). Every changed record gets a modified time above all existing
        ones (one shared time with ``same_ts``). Returns the ids changed.
        """
        t = resolve_type(object_type)
        props = self._clean_props(properties)
        with self.lock:
            if ids is not None:
                idx = self._indices(t, ids)
            elif count is not None and count >= 0:
                idx = self._pick(t, count)
            else:
                raise ValueError("modify() needs ids or a count")
            for i in idx:
                over = self._props[t].setdefault(i, {})
                if props:
                    over.update(props)
                else:
                    name, values = _BUMP[t]
                    cur = self.raw(t, i).get(name)
                    over[name] = values[(values.index(cur) + 1) % len(values) if cur in values else 0]
            self._known[t].update(props)
            self._reindex(t, idx, props)
            stamp = self._tick() if same_ts else 0
            self._stamp(t, idx, [stamp or self._tick() for _ in idx])
            return [str(ID_BASE[t] + i) for i in idx]

    def create(self, object_type: str, count: int, properties: dict[str, Any] | None = None) -> list[str]:
        """Add ``count`` records (generated like the others, created and modified now)."""
        t = resolve_type(object_type)
        props = self._clean_props(properties)
        with self.lock:
            start = self._n[t]
            idx = list(range(start, start + max(0, count)))
            stamps = [self._tick() for _ in idx]
            for i, ts in zip(idx, stamps, strict=True):
                self._created[t][i] = ts
                if props:
                    self._props[t][i] = dict(props)
            self._n[t] = start + len(idx)
            self._known[t].update(props)
            self._reindex(t, idx, props)
            self._stamp(t, idx, stamps)
            return [str(ID_BASE[t] + i) for i in idx]

    def archive(self, object_type: str, ids: Iterable[Any]) -> list[str]:
        """Archive (soft-delete) records: only ``archived=true`` lists show them, search never does."""
        t = resolve_type(object_type)
        with self.lock:
            idx = self._indices(t, ids)
            stamps = [self._tick() for _ in idx]
            self._stamp(t, idx, stamps)  # updatedAt becomes archivedAt
            gone = set(idx)
            self._over[t] = [e for e in self._over[t] if e[1] not in gone]
            for i, ts in zip(idx, stamps, strict=True):
                self._archived[t][i] = ts
            self._arch_sorted[t].extend(idx)
            self._arch_sorted[t].sort()
            return [str(ID_BASE[t] + i) for i in idx]

    # ---- reads --------------------------------------------------------------------------------
    def list_page(self, object_type: str, limit: int, after: str | None, archived: bool) -> tuple[list[int], bool]:
        """Indices of the next list page in id order, and whether more follow."""
        t = resolve_type(object_type)
        last = -1 if not after else decode_after(after) - ID_BASE[t]
        with self.lock:
            if archived:
                arr = self._arch_sorted[t]
                pos = bisect.bisect_right(arr, last)
                page = arr[pos:pos + limit + 1]
            else:
                arch, n, page, i = self._archived[t], self._n[t], [], max(last + 1, 0)
                while i < n and len(page) <= limit:
                    if i not in arch:
                        page.append(i)
                    i += 1
        return page[:limit], len(page) > limit

    def _base_range(self, t: str, r: tuple[int, int, int, int]) -> range:
        """Base indices whose base time is in [r0, r1] and id in [r2, r3] (base time is monotonic)."""
        tlo, thi, ilo, ihi = r
        n0 = self._n0[t]

        def first_at_least(ms: int) -> int:
            lo, hi = 0, n0
            while lo < hi:
                mid = (lo + hi) // 2
                if self._base_ts(mid) < ms:
                    lo = mid + 1
                else:
                    hi = mid
            return lo

        lo = max(first_at_least(tlo), ilo - ID_BASE[t], 0)
        hi = min(first_at_least(thi + 1) if thi < _HI else n0, ihi - ID_BASE[t] + 1, n0)
        return range(lo, max(lo, hi))

    def _changed_in(self, t: str, r: tuple[int, int, int, int]) -> list[tuple[int, int]]:
        over = self._over[t]
        a = bisect.bisect_left(over, (r[0], -1))
        b = bisect.bisect_right(over, (r[1], _HI))
        if r[2] <= ID_BASE[t] and r[3] >= _HI:
            return over[a:b]
        lo, hi = r[2] - ID_BASE[t], r[3] - ID_BASE[t]
        return [e for e in over[a:b] if lo <= e[1] <= hi]

    def ordered(self, t: str, r: tuple[int, int, int, int], by_time: bool, desc: bool) -> Iterator[int]:
        """Live indices matching range ``r`` ordered by (modified time, id) or by id."""
        base = self._base_range(t, r)
        excl = self._excl[t]
        seq = reversed(base) if desc else base
        stream: Iterator[int] = (i for i in seq if i not in excl) if excl else iter(seq)
        changed = self._changed_in(t, r)
        if not changed:
            return stream
        if by_time:
            bt = self._base_ts
            keyed = ((bt(i), i) for i in stream)
            merged = heapq.merge(keyed, reversed(changed) if desc else changed, reverse=desc)
            return (i for _, i in merged)
        return heapq.merge(stream, sorted((i for _, i in changed), reverse=desc), reverse=desc)

    def count_in(self, t: str, r: tuple[int, int, int, int]) -> int:
        base = self._base_range(t, r)
        es = self._excl_sorted[t]
        hidden = bisect.bisect_left(es, base.stop) - bisect.bisect_left(es, base.start)
        return len(base) - hidden + len(self._changed_in(t, r))

    # ---- faults and counters --------------------------------------------------------------------
    def fail_next(self, n: int, status: int = 429, retry_after: int | None = 1,
                  path_prefix: str | None = None) -> None:
        """Make the next ``n`` API requests (under ``path_prefix``) fail with ``status``."""
        with self.lock:
            self._faults.append([n, status, retry_after, path_prefix])

    def take_fault(self, path: str) -> tuple[int, int | None] | None:
        with self.lock:
            for f in self._faults:
                if f[0] > 0 and (f[3] is None or path.startswith(f[3])):
                    f[0] -= 1
                    self._faults = [g for g in self._faults if g[0] > 0]
                    self._stats["faults_injected"] = self._stats.get("faults_injected", 0) + 1
                    return f[1], f[2]
        return None

    def count_request(self, key: str, status: int) -> None:
        with self.lock:
            self._stats[key] = self._stats.get(key, 0) + 1
            self._status[str(status)] = self._status.get(str(status), 0) + 1

    def stats(self) -> dict[str, Any]:
        """Request counters per "METHOD kind" (e.g. ``GET contacts.list``) and record counts."""
        with self.lock:
            reqs = {k: v for k, v in sorted(self._stats.items()) if k != "faults_injected"}
            return {"requests": reqs, "total": sum(reqs.values()), "by_status": dict(sorted(self._status.items())),
                    "faults_injected": self._stats.get("faults_injected", 0),
                    "faults_pending": sum(f[0] for f in self._faults), "clock_ms": self._clock,
                    "records": {t: {"total": self._n[t], "live": self._n[t] - len(self._archived[t]),
                                    "archived": len(self._archived[t]), "created": len(self._created[t]),
                                    "changed": len(self._mod[t])} for t in OBJECT_TYPES}}

    def reset_stats(self) -> None:
        with self.lock:
            self._stats.clear()
            self._status.clear()
