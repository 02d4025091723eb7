"""Cut a wave over: a last delta, a verify, then crm owns the wave's records.

After the cutover the source no longer writes the wave's records: every later `migrate run` or
`migrate delta` holds them back (counted as `held`), so an edit made in the legacy CRM after the
cutover is not applied, while edits in the CRM (system `crm`) go on as usual. The hold is per
record set (the wave's crosswalk rows), which the ownership rules, keyed by entity and field,
cannot express; a plain `crmhub sync run <source>` of the same connector instance does not yet
consult it (docs/migrations.md, "Cutover and plain syncs").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hub.migrate.run import WaveRunner
from hub.migrate.verify import verify
from hub.migrate.waves import MigrateError
from state import migration_repo as mrepo

if TYPE_CHECKING:
    from hub.app import Hub

__all__ = ["CutoverReport", "cutover"]


@dataclass
class CutoverReport:
    wave: str
    done: bool = False
    delta: dict[str, Any] = field(default_factory=dict)
    verify: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cutover(hub: Hub, wave: str, *, force: bool = False,
            clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> CutoverReport:
    rep = CutoverReport(wave)
    with hub.db.begin() as conn:
        row = mrepo.get_wave(conn, wave)
    if row is None or row["state"] != "migrated":
        state = row["state"] if row else "never run"
        raise MigrateError(f"wave {wave} is {state}: only a migrated wave can be cut over. "
                           f"Fix: crmhub migrate run {wave}")
    d = WaveRunner(hub, wave).delta(deletes=True)  # the last one misses nothing, hard deletes included
    rep.delta = d.as_dict()
    if d.status != "ok":
        rep.reason = "the last delta did not finish: " + "; ".join(
            f"{s.stream}: {s.error}" for s in d.streams if s.error)
        return rep
    v = verify(hub, wave)
    rep.verify = v.as_dict()
    if not v.ok and not force:
        rep.reason = "verify found differences (see `verify`); fix them or pass --force"
        return rep
    with hub.db.begin() as conn:
        mrepo.save_wave(conn, wave, clock(), state="cut_over", cutover_at=clock())
    rep.done = True
    return rep
