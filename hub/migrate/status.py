"""Every wave: its state, counts per stream, rejects, last run, last verification, cutover."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from state import migration_repo as mrepo

if TYPE_CHECKING:
    from hub.app import Hub

__all__ = ["status"]


def status(hub: Hub) -> list[dict[str, Any]]:
    with hub.db.begin() as conn:
        stored = {r["name"]: r for r in mrepo.list_waves(conn)}
        out = []
        for name in list(dict.fromkeys([*hub.cfg.waves, *stored])):
            r = stored.get(name) or {}
            cfg = hub.cfg.waves.get(name)
            counts = mrepo.item_counts(conn, name) if r else {}
            out.append({
                "wave": name,
                "source": r.get("source") or (cfg.source if cfg else None),
                "root": r.get("root") or (cfg.root if cfg else None),
                "state": r.get("state") or "planned",
                "in_config": cfg is not None,
                "records": {s: sum(n for k, n in a.items() if k != "deleted") for s, a in counts.items()},
                "actions": counts,
                "rejected": mrepo.reject_counts(conn, name) if r else {},
                "last_run_at": r.get("last_run_at"),
                "last_run_status": (r.get("last_run") or {}).get("status"),
                "last_verified_at": r.get("last_verified_at"),
                "last_verify_ok": r.get("last_verify_ok"),
                "cutover_at": r.get("cutover_at"),
            })
    return out
