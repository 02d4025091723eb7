"""A HubSpot portal's configuration the hub reads but does not sync: owners and deal pipelines.

Owners (`GET /crm/v3/owners`, up to 500 a page) map `hubspot_owner_id` on records and
engagements to a person: `Owner` carries the owner id, email, name, the HubSpot user id and
whether the owner is archived (deactivated users keep their owner id). Pipelines (`GET
/crm/v3/pipelines/deals`, no paging) give stage ids and labels, both plain strings: HubSpot's
default pipeline uses words (`closedwon`), other pipelines numbers (`"1001"`), and either may be
renamed or added at any time, so nothing here is an enum.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["OWNERS_LIMIT", "Owner", "Pipeline", "Stage", "iter_owners", "parse_pipelines"]

OWNERS_LIMIT = 500
Get = Callable[[str, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Owner:
    id: str
    email: str | None
    first_name: str | None
    last_name: str | None
    user_id: str | None
    archived: bool = False

    @property
    def name(self) -> str | None:
        return " ".join(p for p in (self.first_name, self.last_name) if p) or None


@dataclass(frozen=True, slots=True)
class Stage:
    id: str
    label: str
    display_order: int
    is_closed: bool | None
    probability: str | None  # as HubSpot gives it ("0.2"); not every pipeline has one


@dataclass(frozen=True, slots=True)
class Pipeline:
    id: str
    label: str
    display_order: int
    archived: bool
    stages: list[Stage] = field(default_factory=list)

    def stage_label(self, stage_id: str) -> str | None:
        return next((s.label for s in self.stages if s.id == stage_id), None)


def _opt(v: Any) -> str | None:
    return None if v in (None, "") else str(v)


def iter_owners(get: Get, *, archived: bool = False) -> Iterator[Owner]:
    """Every owner (or every archived one), page by page."""
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": OWNERS_LIMIT, "archived": "true" if archived else "false"}
        if after:
            params["after"] = after
        data = get("/crm/v3/owners", params)
        for o in data.get("results") or []:
            if isinstance(o, dict) and o.get("id") not in (None, ""):
                yield Owner(id=str(o["id"]), email=_opt(o.get("email")), first_name=_opt(o.get("firstName")),
                            last_name=_opt(o.get("lastName")), user_id=_opt(o.get("userId")),
                            archived=bool(o.get("archived")))
        after = ((data.get("paging") or {}).get("next") or {}).get("after")
        if not after:
            return


def parse_pipelines(data: dict[str, Any]) -> list[Pipeline]:
    out = []
    for p in data.get("results") or []:
        if not isinstance(p, dict) or p.get("id") in (None, ""):
            continue
        stages = []
        for s in p.get("stages") or []:
            if not isinstance(s, dict) or s.get("id") in (None, ""):
                continue
            meta = s.get("metadata") or {}
            closed = meta.get("isClosed")
            stages.append(Stage(id=str(s["id"]), label=str(s.get("label") or s["id"]),
                                display_order=int(s.get("displayOrder") or 0),
                                is_closed=None if closed is None else str(closed).lower() == "true",
                                probability=_opt(meta.get("probability"))))
        out.append(Pipeline(id=str(p["id"]), label=str(p.get("label") or p["id"]),
                            display_order=int(p.get("displayOrder") or 0), archived=bool(p.get("archived")),
                            stages=sorted(stages, key=lambda s: s.display_order)))
    return sorted(out, key=lambda p: p.display_order)
