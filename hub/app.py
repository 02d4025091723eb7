"""Wiring: one `Hub` holds the config, the database engine, connectors and mappings."""

from __future__ import annotations

import gc
import logging
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from hub.config import HubConfig, load_config
from hub.mapping import Mappings, load_mappings
from hub.objects import activate
from hub.registry import ConnectorFactory
from hub.sync import SyncEngine
from hub.transforms import set_default_region
from state.custom import ensure_tables
from state.db import ensure_schema, make_engine

log = logging.getLogger("crmhub")

if TYPE_CHECKING:
    from hub.auth.store import DbTokenStore


def tune_gc() -> None:
    """Keep CPython's cycle collector off the sync's hot path (a command-line process, once
    its hub is ready).

    A page allocates tens of thousands of small dicts and lists (vendor JSON, provenance),
    nearly none of them in cycles, and each 700 allocations start a collection that walks
    the young objects, every 10th one the older ones: 3.3 s of a 14.8 s merge of 30,000
    contacts went there (gc.callbacks). Freezing what start-up built (modules, config,
    compiled mappings: ~100k objects never freed) and collecting less often cut the
    process's CPU per record by ~20% (bench/merge_throughput.py). Cycles are still
    collected, only in larger batches.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


class Hub:
    def __init__(self, cfg: HubConfig, *, transport: Any = None, sleep: Any = None, db: Engine | None = None):
        self.cfg = cfg
        set_default_region(cfg.identity.default_region)
        activate(cfg.objects)
        self._transport = transport
        self._sleep = sleep
        self._db = db

    @classmethod
    def from_path(cls, path: str | None = None, **kwargs: Any) -> Hub:
        return cls(load_config(path), **kwargs)

    @cached_property
    def db(self) -> Engine:
        return self._db or make_engine(self.cfg.database)

    def ready(self) -> Hub:
        """Check (SQLite: apply) the schema; call before touching the database."""
        ensure_schema(self.db)
        for done in ensure_tables(self.db):
            log.info("custom objects: %s", done)
        return self

    @cached_property
    def factory(self) -> ConnectorFactory:
        from hub.budget import SharedBudget

        def shared(name: str, rate: float, burst: int) -> SharedBudget:
            kwargs = {"sleep": self._sleep} if self._sleep is not None else {}
            return SharedBudget(self.db, name, rate, burst, **kwargs)

        # SQLite is one worker's store, and one writer at a time: a budget shared through it would
        # wait on the lock a page's own transaction holds (a request made while writing, such as a
        # Stripe refund's charge look-up), so there each process keeps its own budget
        shared_budget = shared if self.db.dialect.name != "sqlite" else None
        return ConnectorFactory(self.cfg, transport=self._transport, sleep=self._sleep, budget_factory=shared_budget,
                                token_store=self.token_store)

    @cached_property
    def token_store(self) -> DbTokenStore:
        """OAuth tokens, encrypted in the database; the key (CRMHUB_SECRET_KEY) is read on first use."""
        from hub.auth.store import DbTokenStore

        return DbTokenStore(self.db)

    @cached_property
    def mappings(self) -> Mappings:
        return load_mappings(self.cfg.base_dir() if self.cfg.path else None, self.cfg.mappings_dir)

    @cached_property
    def engine(self) -> SyncEngine:
        return SyncEngine(self.cfg, self.db, self.factory, self.mappings)

    def close(self) -> None:
        if "db" in self.__dict__:
            self.db.dispose()
