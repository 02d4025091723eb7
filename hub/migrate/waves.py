"""What a wave is: its source, its root stream and filter, and the streams that follow the root.

`load_wave(hub, name)` resolves a `waves:` entry of crmhub.yaml against the source connector and
its mapping: the root stream first, then every stream whose mapping references an entity of a
stream already in the wave (contacts and opportunities reference their account; activities their
contact or account), in the order the sync engine writes targets. A stream with no such reference
is left out of the wave (plan says so).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.mapping import StreamMapping
from hub.migrate.where import match_in_memory
from hub.sdk.connector import Connector
from hub.sdk.types import RawRecord

if TYPE_CHECKING:
    from hub.app import Hub

__all__ = ["MigrateError", "StreamPlan", "Wave", "load_wave"]

#: canonical entities that others reference go first (as in hub.sync)
TARGET_ORDER = {"account": 0, "contact": 1, "lead": 1, "opportunity": 2, "activity": 3}


class MigrateError(Exception):
    """A migration command cannot go on; the message says what is wrong and how to fix it."""


@dataclass
class StreamPlan:
    """One stream of a wave: the root (no parent), or a stream following a parent stream."""

    name: str
    target: str
    mapping: StreamMapping
    key: str = "id"  # the source's key column (the external id)
    parent: str | None = None
    ref_field: str | None = None  # the canonical reference field that points at the parent
    parent_ref: Callable[[Any], Any] | None = None  # reads the parent's legacy id from a raw record

    @property
    def fields(self) -> list[str]:
        """The mapped (non-reference) canonical fields: what checksums and verify compare."""
        return [r.name for r in self.mapping.fields]


@dataclass
class Wave:
    name: str
    source: str
    kind: str
    root: str
    where: str | None
    ids_file: str | None
    streams: list[StreamPlan]
    left_out: list[str] = field(default_factory=list)
    _ids: set[str] | None = None

    @property
    def cursor_owner(self) -> str:
        """The name a wave's progress is stored under in hub.cursors (one row per stream)."""
        return f"migrate.{self.name}"

    def run_stream(self, stream: str) -> str:
        """The stream name of the wave's runs in hub.sync_runs (so `crmhub status` shows them)."""
        return f"{stream}@{self.name}"

    def definition(self) -> dict[str, Any]:
        return {"source": self.source, "root": self.root, "where": self.where, "ids_file": self.ids_file,
                "streams": [s.name for s in self.streams]}

    def ids(self) -> set[str] | None:
        if self.ids_file is None:
            return None
        if self._ids is None:
            p = Path(self.ids_file)
            if not p.is_file():
                raise MigrateError(f"waves.{self.name}.ids_file: {p} does not exist. Fix: write the root ids "
                                   "there, one per line")
            with p.open(encoding="utf-8-sig") as f:
                self._ids = {s for line in f if (s := line.strip()) and not s.startswith("#")}
        return self._ids

    def select_roots(self, connector: Connector, records: Sequence[RawRecord]) -> set[str]:
        """The external ids of root records (one page) that this wave selects."""
        ids = self.ids()
        if ids is not None:
            return {r.external_id for r in records if r.external_id in ids}
        if self.where is None:
            return {r.external_id for r in records}
        return select_where(connector, self.root, self.where, records)


def select_where(connector: Connector, stream: str, where: str, records: Sequence[RawRecord]) -> set[str]:
    pushdown = getattr(connector, "match_where", None)
    if pushdown is not None:
        return set(pushdown(stream, where, [r.external_id for r in records]))
    return match_in_memory(records, where)


def load_wave(hub: Hub, name: str) -> Wave:
    waves = hub.cfg.waves
    if name not in waves:
        known = ", ".join(waves) or "none configured"
        raise MigrateError(f"no wave {name!r} in {hub.cfg.path or 'crmhub.yaml'} (waves: {known}). "
                           f"Fix: add `waves: {{{name}: {{source: ..., root: ..., where: ...}}}}`")
    w = waves[name]
    factory = hub.factory
    kind = factory.kind(w.source)
    conn = factory.build(w.source)
    try:
        specs = {s.name: s for s in conn.enabled_streams()}
    finally:
        conn.close()
    if w.root not in specs:
        raise MigrateError(f"waves.{name}.root: {w.source} has no stream {w.root!r}. "
                           f"Fix: use one of: {', '.join(specs)}")
    mappings = hub.mappings.for_connector(w.source, kind)
    missing = [s for s in specs if s not in mappings]
    if missing:
        raise MigrateError(f"the mapping of {w.source} has no stream {', '.join(missing)}. Fix: add them to "
                           f"mappings/{w.source}.yaml (or mappings/{kind}.yaml)")
    root = specs[w.root]
    plans = [StreamPlan(w.root, root.target, mappings[w.root], key=root.primary_key)]
    by_target = {root.target: w.root}
    rest = sorted((s for s in specs.values() if s.name != w.root), key=lambda s: TARGET_ORDER.get(s.target, 9))
    left_out = []
    for spec in rest:
        m = mappings[spec.name]
        chosen = None
        for ref_field, (entity, getter) in m.references.items():
            if entity in by_target and (chosen is None or by_target[entity] == w.root):
                chosen = (ref_field, by_target[entity], getter)
        if chosen is None:
            left_out.append(spec.name)
            continue
        plans.append(StreamPlan(spec.name, spec.target, m, key=spec.primary_key, parent=chosen[1],
                                ref_field=chosen[0], parent_ref=chosen[2]))
        by_target.setdefault(spec.target, spec.name)
    ids_file = w.ids_file
    if ids_file is not None and not Path(ids_file).is_absolute():
        ids_file = str(hub.cfg.base_dir() / ids_file)
    return Wave(name, w.source, kind, w.root, w.where, ids_file, plans, left_out)
