"""Per-field source of truth: which system may set a canonical field, decided per record.

This is the pure core: no database, no I/O on the decision path. The page writer loads a
page's current values and provenance in one query, calls `Merger.merge` once per record,
and writes what comes back (values, provenance, decisions) in one statement per table.

Rules come from `ownership:` in crmhub.yaml, over the defaults in `mappings/ownership.yaml`,
key by key::

    ownership:
      contact.phone: {rule: owner, system: hubspot_a}
      contact.lifecycle_stage: {rule: priority, systems: [hubspot_b, hubspot_a]}
      contact.title: {rule: fill_empty}
      contact.*: {rule: most_recent}

A key is `<entity>.<field>` or `<entity>.*`; the exact key wins over the wildcard, and a
field no key covers follows `most_recent`. A system is a connector instance name, or `crm`
for edits made in the CRM itself.

Each write is a claim `(system, vendor_at)`; the stored value carries the claim that set it
(its provenance). A write is accepted when its rule lets it beat the stored claim:

- ``owner``: only the named system writes (an empty value too: the owner may clear). Its
  own writes replace each other by vendor time, as under ``most_recent``; a write from any
  other system is rejected.
- ``priority``: a write needs a value (not None, not ""): an empty value is never a value,
  so it never overwrites. It is accepted when the field is empty, when the stored value's
  source is unknown, when its system ranks above the stored one, or when both rank the same
  and it is newer by ``most_recent``. Systems not listed rank below every listed one, all
  alike (so among them, and among one system's own writes, ``most_recent`` decides).
- ``most_recent``: the later vendor time wins. **No vendor time ranks older than any
  time.** **At equal times (or both without one) the system whose name sorts first wins**
  (`crm` beats `hubspot_a`, `hubspot_a` beats `hubspot_b`); the same system at the same
  time is the same claim, so its later arrival replaces the value (that system's own feed
  order is the only order there is). An empty value is a value here: a newer clear wins.
- ``fill_empty``: a value is written only into an empty field (None or ""); the first
  filler keeps it.

A stored value whose provenance is unknown (loaded before provenance existed, or migrated)
has the weakest claim: any write its rule allows replaces it.

Order independence: under ``priority`` and ``most_recent`` the final value and provenance
are those of the strongest claim among all writes, whatever their arrival order, provided a
system reports one value per vendor time (one moment of a vendor record has one state). That
is why a write whose value equals the stored one still takes over the provenance when its
claim is stronger (e.g. the owner, or a newer system, confirms the value): it is returned in
`MergeResult.provenance` without a decision, as nothing changed.

Known limits, by design of a store that keeps one value and one claim per field:

- vendor times are per record unless `field_times` is passed: under ``most_recent`` a
  system whose record changed later wins every field of it, an empty one included. Pass
  per-field times where the vendor has them (HubSpot property history), or use
  ``priority``/``fill_empty`` for fields a source rarely fills;
- under ``priority`` a clear from the winning system is not applied (the next system's
  value is not known without one stored value per system).

Datetimes must be timezone-aware (the store hands back UTC).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from importlib import resources
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from hub.config import ConfigError
from state.schema import ENTITY_TABLES

__all__ = [
    "DEFAULT_RULE",
    "ENTITIES",
    "RULE_NAMES",
    "Decision",
    "MergeResult",
    "Merger",
    "RuleSpec",
    "Rules",
    "archive_on_delete",
    "delete_outcome",
    "load_default_rules",
    "load_rules",
    "parse_rules",
]

ENTITIES = ("account", "contact", "lead", "opportunity")


def entity_names() -> tuple[str, ...]:
    """The built-in entities and the custom objects of the config in use (hub.objects)."""
    return tuple(ENTITY_TABLES)
RULE_NAMES = ("owner", "priority", "most_recent", "fill_empty")
RuleName = Literal["owner", "priority", "most_recent", "fill_empty"]

_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\.(\*|[A-Za-z_][A-Za-z0-9_]*)$")
_SYSTEM = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # a connector instance name (hub.config), or `crm`
_SYSTEM_FIX = "use a connector instance name from crmhub.yaml `connectors:`, or `crm`"


# -- rules -------------------------------------------------------------------------------------


class RuleSpec(BaseModel):
    """One rule, as written under a key: `{rule: owner, system: hubspot_a}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: RuleName
    #: `owner`: the one system that may write the field
    system: str | None = None
    #: `priority`: systems, first choice first
    systems: tuple[str, ...] | None = None

    @field_validator("rule", mode="before")
    @classmethod
    def _known_rule(cls, v: Any) -> Any:
        if v not in RULE_NAMES:
            close = difflib.get_close_matches(str(v), RULE_NAMES, n=1)
            hint = f"`rule: {close[0]}`" if close else "one of " + ", ".join(RULE_NAMES)
            raise ValueError(f"unknown rule {v!r}. Fix: use {hint}")
        return v

    @field_validator("system", mode="before")
    @classmethod
    def _one_system(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, str):
            raise ValueError(f"`system` must be one name (got {v!r}). Fix: write `system: <name>`; "
                             "to rank several systems use {rule: priority, systems: [...]}")
        if v is not None and not _SYSTEM.match(v):
            raise ValueError(f"`system` {v!r} is not a system name. Fix: {_SYSTEM_FIX}")
        return v

    @field_validator("systems", mode="before")
    @classmethod
    def _system_list(cls, v: Any) -> Any:
        if v is None:
            return v
        if not isinstance(v, list | tuple) or not all(isinstance(s, str) for s in v):
            raise ValueError(f"`systems` must be a list of names (got {v!r}). "
                             "Fix: write `systems: [<first choice>, <second>]`")
        for s in v:
            if not _SYSTEM.match(s):
                raise ValueError(f"`systems` names {s!r}, which is not a system name. Fix: {_SYSTEM_FIX}")
        dup = next((s for i, s in enumerate(v) if s in v[:i]), None)
        if dup is not None:
            raise ValueError(f"`systems` lists {dup!r} twice. Fix: name each system once, first choice first")
        return tuple(v)

    @model_validator(mode="after")
    def _arguments(self) -> RuleSpec:
        if self.rule == "owner":
            if self.systems is not None:
                raise ValueError("owner takes one `system`, not `systems`. "
                                 "Fix: write `system: <name>` (or use rule: priority to rank several)")
            if self.system is None:
                raise ValueError("owner rule names no system. Fix: add `system: <connector instance or crm>`, "
                                 "for example {rule: owner, system: hubspot_main}")
        elif self.rule == "priority":
            if self.system is not None:
                raise ValueError("priority takes `systems` (a list), not `system`. "
                                 "Fix: write `systems: [<first choice>, <second>]`")
            if not self.systems:
                raise ValueError("priority rule lists no systems. Fix: add `systems: [<first choice>, <second>]`, "
                                 "for example {rule: priority, systems: [hubspot_b, hubspot_a]}")
        elif self.system is not None or self.systems is not None:
            given = "system" if self.system is not None else "systems"
            raise ValueError(f"{self.rule} takes no systems. Fix: remove `{given}`")
        return self

    def named_systems(self) -> tuple[str, ...]:
        return (self.system,) if self.system is not None else self.systems or ()

    def primary_system(self) -> str | None:
        """The system this rule puts first: the owner, or the first choice of a priority list."""
        if self.system is not None:
            return self.system
        return self.systems[0] if self.systems else None


DEFAULT_RULE = RuleSpec(rule="most_recent")


class Rules(BaseModel):
    """Validated rules by key (`contact.phone`, `contact.*`). Build with `parse_rules`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    by_key: dict[str, RuleSpec] = {}

    def rule_for(self, entity: str, field: str) -> RuleSpec:
        """The exact key, else the entity's wildcard, else `most_recent`."""
        return self.by_key.get(f"{entity}.{field}") or self.by_key.get(f"{entity}.*") or DEFAULT_RULE

    def entity_rule(self, entity: str) -> RuleSpec | None:
        """The `<entity>.*` rule, if any: it names the entity's primary system (see `delete_outcome`)."""
        return self.by_key.get(f"{entity}.*")

    def override(self, other: Rules) -> Rules:
        """These rules with `other`'s keys replacing them key by key (user rules over defaults)."""
        return Rules(by_key={**self.by_key, **other.by_key})


def _rule_problems(err: ValidationError) -> list[str]:
    out = []
    for e in err.errors():
        kind, loc = e["type"], [str(p) for p in e["loc"]]
        if kind == "value_error":
            msg = str(e["msg"]).removeprefix("Value error, ")
        elif kind == "extra_forbidden":
            msg = (f"`{loc[-1]}` is not an option of a rule. Fix: remove it, or check its spelling "
                   "(a rule takes `rule`, plus `system` for owner or `systems` for priority)")
        elif kind == "missing" and loc == ["rule"]:
            msg = "names no rule. Fix: add `rule: " + "|".join(RULE_NAMES) + "`"
        else:
            msg = f"`{'.'.join(loc)}`: {e['msg']} (got {e.get('input')!r}). Fix: correct the value"
        out.append(msg)
    return out


def parse_rules(data: Mapping[str, Any] | None, source: str = "crmhub.yaml", *,
                systems: Collection[str] | None = None,
                fields: Mapping[str, Collection[str]] | None = None) -> Rules:
    """Validate the mapping under `ownership:`; raise `ConfigError` listing every problem.

    Each problem reads `ownership.<key>: <what>. Fix: <how>`. With `systems` (the configured
    connector instances) a rule naming any other system than those or `crm` is a problem; with
    `fields` (entity -> its canonical fields) so is a key naming a field the entity lacks.

    >>> parse_rules({"contact.title": {"rule": "fill_empty"}}).rule_for("contact", "title").rule
    'fill_empty'
    """
    if data is None:
        return Rules()
    if not isinstance(data, Mapping):
        raise ConfigError(source, ["ownership: must be a mapping of `<entity>.<field>: {rule: ...}`. "
                                   "Fix: write for example `contact.*: {rule: most_recent}` under it"])
    problems: list[str] = []
    by_key: dict[str, RuleSpec] = {}
    known = None if systems is None else {*systems, "crm"}
    for key, value in data.items():
        where = f"ownership.{key}"
        m = _KEY.match(key) if isinstance(key, str) else None
        if m is None:
            problems.append(f"{where}: not a field key. Fix: write `<entity>.<field>` or `<entity>.*`, "
                            "for example `contact.phone` or `contact.*`")
            continue
        entity, field = m.groups()
        names = entity_names()
        if entity not in names:
            close = difflib.get_close_matches(entity, names, n=1)
            hint = f"`{close[0]}.{field}`" if close else "one of " + ", ".join(names)
            problems.append(f"{where}: unknown entity {entity!r}. Fix: use {hint}")
            continue
        if fields is not None and field != "*" and entity in fields and field not in fields[entity]:
            close = difflib.get_close_matches(field, list(fields[entity]), n=1)
            hint = f"`{entity}.{close[0]}`" if close else f"a field of {entity}"
            problems.append(f"{where}: {entity} has no field {field!r}. Fix: use {hint}")
            continue
        if not isinstance(value, Mapping):
            problems.append(f"{where}: must be a mapping (got {value!r}). "
                            "Fix: write for example `{rule: most_recent}`")
            continue
        try:
            spec = RuleSpec.model_validate(dict(value))
        except ValidationError as err:
            problems.extend(f"{where}: {p}" for p in _rule_problems(err))
            continue
        if known is not None:
            for s in spec.named_systems():
                if s not in known:
                    close = difflib.get_close_matches(s, sorted(known), n=1)
                    hint = f"`{close[0]}`" if close else "one of " + ", ".join(sorted(known))
                    problems.append(f"{where}: names system {s!r}, which is not a connector in crmhub.yaml. "
                                    f"Fix: use {hint}")
        by_key[key] = spec
    if problems:
        raise ConfigError(source, problems)
    return Rules(by_key=by_key)


def load_default_rules() -> Rules:
    """The rules shipped in `mappings/ownership.yaml`."""
    text = resources.files("mappings").joinpath("ownership.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    return parse_rules(data.get("ownership"), "mappings/ownership.yaml")


def load_rules(user: Mapping[str, Any] | None, source: str = "crmhub.yaml", *,
               systems: Collection[str] | None = None) -> Rules:
    """The default rules with crmhub.yaml's `ownership:` replacing them key by key."""
    return load_default_rules().override(parse_rules(user, source, systems=systems))


# -- deletes -----------------------------------------------------------------------------------


def delete_outcome(rules: Rules, entity: str, deleting_system: str,
                   remaining_linked_systems: Iterable[str]) -> tuple[bool, str]:
    """Whether a vendor delete archives the canonical record, and why.

    The delete always unlinks the deleting system. The record is archived when:

    1. the entity's wildcard rule `<entity>.*` names a primary system (the `owner`, or the
       first of a `priority` list): then only that system's delete archives it, whatever else
       is linked; a delete from any other system never does, even if it was the last link
       (the primary system, `crm` included, still holds the record);
    2. otherwise (`most_recent`, `fill_empty`, no wildcard rule): only when no other system
       remains linked, so no source vouches for the record any more.
    """
    spec = rules.entity_rule(entity)
    primary = spec.primary_system() if spec is not None else None
    if spec is not None and primary is not None:
        if deleting_system == primary:
            return True, f"{deleting_system} is the primary system of {entity} ({entity}.*: {spec.rule})"
        return False, f"{deleting_system} is not the primary system of {entity} ({primary} is): unlinked only"
    others = sorted(set(remaining_linked_systems) - {deleting_system})
    if others:
        return False, f"still linked to {', '.join(others)}: unlinked only"
    return True, "no other system is linked"


def archive_on_delete(rules: Rules, entity: str, deleting_system: str,
                      remaining_linked_systems: Iterable[str]) -> bool:
    """`delete_outcome` without the reason."""
    return delete_outcome(rules, entity, deleting_system, remaining_linked_systems)[0]


# -- merging -----------------------------------------------------------------------------------


class Decision(NamedTuple):
    """One accepted or rejected write, for the change log and `crmhub explain`."""

    field: str
    accepted: bool
    rule: str
    reason: str
    old: Any
    new: Any


class MergeResult(NamedTuple):
    #: field -> value, only the accepted fields whose value changes
    values: dict[str, Any]
    #: field -> (system, vendor_at, rule): every field whose provenance changes (a superset of `values`)
    provenance: dict[str, tuple[str, datetime | None, str]]
    decisions: list[Decision]


_OWNER, _PRIORITY, _MOST_RECENT, _FILL_EMPTY = range(4)
_CODES = {"owner": _OWNER, "priority": _PRIORITY, "most_recent": _MOST_RECENT, "fill_empty": _FILL_EMPTY}

# outcomes of comparing two claims by vendor time (> 0: the incoming claim wins)
_NO_CLAIM, _NEWER, _UNTIMED_STORED, _TIE_FIRST, _SAME = 1, 2, 3, 4, 5
_OLDER, _UNTIMED_IN, _TIE_SECOND = -1, -2, -3


def _by_time(at: datetime | None, system: str, t: datetime | None, s: str) -> int:
    """Compare the incoming claim (at, system) with the stored one (t, s) under most_recent."""
    if at is None:
        if t is not None:
            return _UNTIMED_IN
    elif t is None:
        return _UNTIMED_STORED
    elif at != t:
        return _NEWER if at > t else _OLDER
    if system == s:
        return _SAME
    return _TIE_FIRST if system < s else _TIE_SECOND


def _time_reason(code: int, system: str, s: str) -> str:
    if code == _NEWER:
        return f"newer than the stored change from {s}"
    if code == _OLDER:
        return f"older than the stored change from {s}"
    if code == _UNTIMED_STORED:
        return f"the stored value from {s} has no vendor time"
    if code == _UNTIMED_IN:
        return f"no vendor time, and the stored value from {s} has one"
    if code == _TIE_FIRST:
        return f"same vendor time as {s}; {system} sorts first"
    if code == _TIE_SECOND:
        return f"same vendor time as {s}; {s} sorts first"
    return "same system and vendor time: the later arrival wins"


class Merger:
    """Decides the fields of one entity's records; build once per (rules, entity), reuse per page.

    >>> from datetime import UTC, datetime
    >>> rules = parse_rules({"contact.phone": {"rule": "owner", "system": "hubspot_a"}})
    >>> r = Merger(rules, "contact").merge({"phone": "+1 555"}, {}, {"phone": "+1 666"}, "hubspot_b",
    ...                                    datetime(2024, 5, 1, tzinfo=UTC))
    >>> r.values, r.decisions[0].reason
    ({}, 'hubspot_a owns this field')
    """

    def __init__(self, rules: Rules, entity: str):
        if entity not in ENTITY_TABLES:
            raise ValueError(f"unknown entity {entity!r}: use one of {', '.join(ENTITY_TABLES)}")
        self.rules = rules
        self.entity = entity
        #: field -> (code, rule name, owner, ranks, rejection reason for non-owners)
        self._table: dict[str, tuple[int, str, str | None, dict[str, int] | None, str]] = {}

    def _compile(self, field: str) -> tuple[int, str, str | None, dict[str, int] | None, str]:
        spec = self.rules.rule_for(self.entity, field)
        systems = spec.systems or ()
        ranks = {s: len(systems) - i for i, s in enumerate(systems)} if spec.rule == "priority" else None
        compiled = (_CODES[spec.rule], spec.rule, spec.system, ranks, f"{spec.system} owns this field")
        self._table[field] = compiled
        return compiled

    def rule_of(self, field: str) -> str:
        """The rule name that decides `field` of this entity."""
        return (self._table.get(field) or self._compile(field))[1]

    def first(self, incoming: Mapping[str, Any], system: str, vendor_at: datetime | None) -> MergeResult:
        """`merge` into a new (empty) entity, without the comparisons: the same values and
        provenance, and the same refused writes (an `owner` field from another system), but
        no decisions for the accepted ones: they are `values`, each with no old value."""
        values: dict[str, Any] = {}
        prov: dict[str, tuple[str, datetime | None, str]] = {}
        refused: list[Decision] = []
        table = self._table
        claims: dict[str, tuple[str, datetime | None, str]] = {}
        for field, new in incoming.items():
            r = table.get(field)
            if r is None:
                r = self._compile(field)
            code = r[0]
            if code == _OWNER and system != r[2]:
                if new is not None:
                    refused.append(Decision(field, False, r[1], r[4], None, new))
                continue
            if code in (_PRIORITY, _FILL_EMPTY) and (new is None or new == ""):
                continue
            claim = claims.get(r[1])
            if claim is None:
                claim = claims[r[1]] = (system, vendor_at, r[1])
            prov[field] = claim
            if new is not None:
                values[field] = new
        return MergeResult(values, prov, refused)

    def merge(self, current: Mapping[str, Any], provenance: Mapping[str, tuple[Any, ...] | None],
              incoming: Mapping[str, Any], system: str, vendor_at: datetime | None,
              field_times: Mapping[str, datetime | None] | None = None) -> MergeResult:
        """Decide every incoming field of one record.

        `current`: the stored canonical values (empty for a new entity); `provenance`: field ->
        `(system, vendor_at, ...)` of the stored value, or missing/None when unknown (only the
        first two items are read, so stored rows can be passed as they are); `incoming`: the
        mapped values from `system`, changed at `vendor_at` on the vendor's side (`field_times`
        overrides it per field). A field whose incoming value equals the stored one gets no
        decision; its provenance moves to the incoming claim when that claim is the stronger.
        Inputs are not modified.
        """
        values: dict[str, Any] = {}
        prov: dict[str, tuple[str, datetime | None, str]] = {}
        decisions: list[Decision] = []
        table = self._table
        claims: dict[str, tuple[str, datetime | None, str]] = {}
        for field, new in incoming.items():
            r = table.get(field)
            if r is None:
                r = self._compile(field)
            code, name, owner, ranks, not_owner = r
            old = current.get(field)
            at = vendor_at if field_times is None else field_times.get(field, vendor_at)
            p = provenance.get(field)
            reason = ""
            if code == _MOST_RECENT:
                if p is None:
                    ok, reason = True, "no provenance for the stored value"
                else:
                    c = _by_time(at, system, p[1], p[0])
                    ok = c > 0
                    if old != new:
                        reason = _time_reason(c, system, p[0])
            elif code == _OWNER:
                if system != owner:
                    ok, reason = False, not_owner
                elif p is None or p[0] != system:
                    ok, reason = True, not_owner
                else:
                    c = _by_time(at, system, p[1], p[0])
                    ok = c > 0
                    if old != new:
                        reason = f"{not_owner}; {_time_reason(c, system, p[0])}"
            elif code == _PRIORITY:
                assert ranks is not None
                if new is None or new == "":
                    if old is None or old == "":
                        continue
                    ok, reason = False, "an empty value never overwrites under priority"
                elif old is None or old == "":
                    ok, reason = True, "the field was empty"
                elif p is None:
                    ok, reason = True, "no provenance for the stored value"
                else:
                    s = p[0]
                    mine, theirs = ranks.get(system, 0), ranks.get(s, 0)
                    if mine != theirs:
                        ok = mine > theirs
                        reason = f"{system} ranks {'above' if ok else 'below'} {s}"
                    else:
                        c = _by_time(at, system, p[1], s)
                        ok = c > 0
                        if old != new:
                            reason = f"same rank as {s}; {_time_reason(c, system, s)}"
            else:  # fill_empty
                if new is None or new == "":
                    continue
                ok = old is None or old == ""
                reason = "the field was empty" if ok else "the field already has a value"
            if old == new:
                # nothing changes; a stronger claim on the same value takes the provenance
                if ok and (p is None or p[0] != system or p[1] != at):
                    claim = claims.get(name) if at is vendor_at else None
                    if claim is None:
                        claim = (system, at, name)
                        if at is vendor_at:
                            claims[name] = claim
                    prov[field] = claim
                continue
            if ok:
                claim = claims.get(name) if at is vendor_at else None
                if claim is None:
                    claim = (system, at, name)
                    if at is vendor_at:
                        claims[name] = claim
                values[field] = new
                prov[field] = claim
            decisions.append(Decision(field, ok, name, reason, old, new))
        return MergeResult(values, prov, decisions)
