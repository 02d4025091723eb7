"""Lead routing: who owns a lead (or a contact) a sync has just created, by a rule chain.

Configured in crmhub.yaml; the first rule that gives an owner wins::

    routing:
      teams:
        emea: [anna, bert]
        us: [carl, dora, ed]
        enterprise: [erin]
      lead:                                  # chains per entity: lead, contact
        - {rule: account_owner}              # the matched account's owner
        - {rule: score, min: 80, team: enterprise}
        - {rule: territory, field: country, territories: {DE: emea, FR: emea, US: us, USA: us}}
        - {rule: team, team: us}             # everyone else
      contact:
        - {rule: account_owner}

Rules: `account_owner` (a contact's account; a lead's account by its email domain, then
its company name), `territory` (a field's value — canonical, else custom — → a team; values compared case-blind),
`score` (a numeric field at or over `min` → a team or an `owner`), `team` and `owner`
(unconditional). A team hands out its members by round robin; the position lives in
hub.routing_state and a page takes a block of it in one statement, so it is fair across
restarts and across workers. Routing runs only when a sync creates the record and it has
no owner, so re-running a sync never re-assigns. Every assignment is written as the
owner_id's provenance (system `routing`, rule `routing:<rule>`), a change-log entry with
the rule's inputs (`crmhub explain lead <id> owner_id`), and an `assignment` activity. A
record no rule matches stays unassigned and `crmhub status` lists it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from sqlalchemy import Connection, func, select

from hub.config import ConfigError, format_validation_error
from hub.identity import norm_domain, norm_name
from hub.ids import new_id
from state import repos
from state.schema import accounts, routing_state

__all__ = ["ROUTED", "SYSTEM", "Assignment", "Router", "RoutingSpec", "assignment_activities", "load_routing"]

SYSTEM = "routing"
ROUTED = ("lead", "contact")


class RuleStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: Literal["account_owner", "territory", "score", "team", "owner"]
    field: str | None = None
    territories: dict[str, str] | None = None
    min: float | None = None
    team: str | None = None
    owner: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> RuleStep:
        need = {"territory": ("field", "territories"), "score": ("min",), "team": ("team",), "owner": ("owner",)}
        for key in need.get(self.rule, ()):
            if getattr(self, key) is None:
                raise ValueError(f"rule {self.rule} needs `{key}:`")
        if self.rule == "score" and (self.team is None) == (self.owner is None):
            raise ValueError("rule score needs one of `team:` or `owner:`")
        return self


class RoutingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    teams: dict[str, list[str]] = {}
    lead: list[RuleStep] = []
    contact: list[RuleStep] = []

    @model_validator(mode="after")
    def _teams_known(self) -> RoutingSpec:
        for entity in ROUTED:
            for i, step in enumerate(getattr(self, entity)):
                teams = [step.team] if step.team else list((step.territories or {}).values())
                for t in teams:
                    if t not in self.teams:
                        known = ", ".join(self.teams) or "none defined"
                        raise ValueError(f"{entity}[{i}]: unknown team {t!r}. Fix: add it under "
                                         f"`routing.teams` (teams: {known})")
                    if not self.teams[t]:
                        raise ValueError(f"teams.{t}: a team needs at least one member")
        return self


def load_routing(data: Mapping[str, Any] | None, source: str = "crmhub.yaml") -> RoutingSpec | None:
    if not data:
        return None
    try:
        return RoutingSpec.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(source, format_validation_error(err, "routing")) from None


@dataclass
class Assignment:
    entity_id: str
    owner: str | None
    rule: str | None  # e.g. "territory" (None: no rule matched)
    step: int | None
    inputs: dict[str, Any] = field(default_factory=dict)

    def reason(self) -> str:
        if self.owner is None:
            return "no routing rule matched: left unassigned"
        shown = ", ".join(f"{k}={v}" for k, v in self.inputs.items())
        return f"rule {self.step} ({self.rule}) matched: {shown}"


class Router:
    def __init__(self, spec: RoutingSpec):
        self.spec = spec

    def chain(self, entity: str) -> list[RuleStep]:
        return list(getattr(self.spec, entity, []) or []) if entity in ROUTED else []

    def route(self, conn: Connection, entity: str, items: Sequence[tuple[str, dict[str, Any]]],
              now: datetime) -> list[Assignment]:
        """Assign owners to new records (id, values) of one page: a few queries per page."""
        chain = self.chain(entity)
        if not chain or not items:
            return []
        owners = self._account_owners(conn, entity, items) if any(s.rule == "account_owner" for s in chain) else {}
        out: list[Assignment] = []
        wanted: dict[str, list[Assignment]] = {}  # team -> assignments waiting for a member
        for eid, values in items:
            a = Assignment(eid, None, None, None)
            for i, step in enumerate(chain, 1):
                team = None
                if step.rule == "account_owner":
                    hit = owners.get(eid)
                    if hit:
                        a.owner, a.inputs = hit[1], {"account": hit[0], "by": hit[2]}
                elif step.rule == "territory":
                    assert step.field is not None and step.territories is not None
                    v = _value(values, step.field)
                    table = {k.strip().lower(): t for k, t in step.territories.items()}
                    if v not in (None, "") and str(v).strip().lower() in table:
                        team, a.inputs = table[str(v).strip().lower()], {step.field: v}
                elif step.rule == "score":
                    assert step.min is not None
                    score = _number(_value(values, step.field or "score"))
                    if score is not None and score >= step.min:
                        a.inputs = {step.field or "score": score, "min": step.min}
                        team, a.owner = step.team, step.owner
                elif step.rule == "team":
                    team = step.team
                elif step.rule == "owner":
                    a.owner = step.owner
                if team is not None:
                    a.inputs["team"] = team
                    wanted.setdefault(team, []).append(a)
                if a.owner is not None or team is not None:
                    a.rule, a.step = step.rule, i
                    break
            out.append(a)
        for team, waiting in wanted.items():
            members = self.spec.teams[team]
            start = self._take_positions(conn, team, len(waiting), now)
            for k, a in enumerate(waiting):
                pos = start + k
                a.owner = members[pos % len(members)]
                a.inputs["round_robin"] = f"{pos % len(members) + 1} of {len(members)}"
        return out

    def _take_positions(self, conn: Connection, team: str, n: int, now: datetime) -> int:
        """A block of n round-robin positions; one statement, serialised by the row's lock."""
        ins = repos._insert(conn, routing_state).values(team=team, position=n, updated_at=now)
        stmt = ins.on_conflict_do_update(index_elements=[routing_state.c.team],
                                         set_={"position": routing_state.c.position + n, "updated_at": now}
                                         ).returning(routing_state.c.position)
        end = int(conn.execute(stmt).scalar_one())
        return end - n

    def _account_owners(self, conn: Connection, entity: str,
                        items: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, tuple[str, str, str]]:
        """id -> (account id, its owner, how it was found), for records whose account has an owner."""
        a = accounts.c
        out: dict[str, tuple[str, str, str]] = {}
        if entity == "contact":
            ids = sorted({v["account_id"] for _e, v in items if v.get("account_id")})
            found: dict[str, str] = {}
            for chunk in repos.parts(conn, ids):
                found.update(conn.execute(select(a.id, a.owner_id).where(repos.among(conn, a.id, chunk), a.owner_id.is_not(None),
                                                                         a.archived_at.is_(None))).all())
            for eid, v in items:
                if v.get("account_id") in found:
                    out[eid] = (v["account_id"], found[v["account_id"]], "account_id")
            return out
        domains = {eid: norm_domain(str(v.get("email") or "").rpartition("@")[2]) for eid, v in items}
        names = {eid: norm_name(v.get("company")) for eid, v in items}
        by_domain: dict[str, tuple[str, str]] = {}
        by_name: dict[str, tuple[str, str]] = {}
        for keys, col, target in ((sorted({d for d in domains.values() if d}), func.lower(a.domain), by_domain),
                                  (sorted({n for n in names.values() if n}), func.lower(a.name), by_name)):
            for chunk in repos.parts(conn, keys):
                q = (select(col, a.id, a.owner_id).where(repos.among(conn, col, chunk), a.owner_id.is_not(None),
                                                         a.archived_at.is_(None))
                     .order_by(a.created_at.desc(), a.id.desc()))
                for key, aid, owner in conn.execute(q):
                    target[key] = (aid, owner)  # newest first: the oldest wins
        for eid, _v in items:
            d, n = domains.get(eid), names.get(eid)
            if d and d in by_domain:
                out[eid] = (*by_domain[d], "email domain")
            elif n and n in by_name:
                out[eid] = (*by_name[n], "company name")
        return out


def assignment_activities(entity: str, assigned: Sequence[Assignment], values: Mapping[str, dict[str, Any]],
                          now: datetime) -> list[dict[str, Any]]:
    """One `assignment` activity per routed record (idempotent on its external id)."""
    rows = []
    for a in assigned:
        if a.owner is None:
            continue
        v = values[a.entity_id]
        rows.append({"id": new_id(), "type": "assignment", "source": SYSTEM, "external_id": f"{entity}:{a.entity_id}",
                     "account_id": v.get("account_id"), "contact_id": a.entity_id if entity == "contact" else None,
                     "opportunity_id": None, "actor_id": a.owner[:64], "occurred_at": now, "recorded_at": now,
                     "subject": f"{entity} assigned to {a.owner}", "status": "completed",
                     "payload": {"entity": entity, "id": a.entity_id, "owner": a.owner, "rule": a.rule,
                                 "step": a.step, "inputs": a.inputs}})
    return rows


def _value(values: Mapping[str, Any], name: str) -> Any:
    """A canonical field, else a custom one (`country` of a lead lives in its custom fields)."""
    v = values.get(name)
    if v is None and isinstance(values.get("custom"), dict):
        v = values["custom"].get(name)
    return v


def _number(v: Any) -> float | None:
    if v is None or v == "":
        return None
    try:
        return float(Decimal(str(v)))
    except (InvalidOperation, ValueError):
        return None

