"""Cut a wave over: a last delta, a verify, then crm owns the wave's records.

After the cutover the source no longer writes the wave's records, however it is read, while edits
in the CRM (system `crm`) go on as usual:

- `migrate delta` of the wave, or a `migrate run` of another wave that selects them, holds them
  back (counted as `held`, nothing written; legacy deletes are not applied either);
- `migrate run` of the wave refuses (nothing to run);
- a plain `crmhub sync run <source>` of the same connector instance refuses them too: its page
  writer asks the crosswalk (`hub.sync.SyncEngine._hold`, `state.migration_repo.held_ids`) and
  logs a change-log `reject` naming the cut-over wave (`hub.writer.PageWriter._drop_held`).

The hold is per record set (the wave's crosswalk rows), which the ownership rules, keyed by entity
and field, cannot express. A plain sync still writes records of no wave, and does not yet hold
back deletes (docs/migrations.md, "Cutover and plain syncs").
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
