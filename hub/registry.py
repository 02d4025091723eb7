"""Find connectors through the `crmhub.connectors` entry-point group; build instances from config."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from hub.config import ConfigError, HubConfig, format_validation_error
from hub.sdk.connector import Connector, ConnectorContext
from hub.sdk.ratelimit import RateBudget, TokenBucket

GROUP = "crmhub.connectors"


@cache
def connector_kinds() -> dict[str, Any]:
    """kind -> entry point (loaded lazily: importing every connector would slow start-up)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def connector_class(kind: str) -> type[Connector]:
    eps = connector_kinds()
    if kind not in eps:
        raise KeyError(kind)
    cls = eps[kind].load()
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise TypeError(f"entry point {kind!r} does not name a Connector subclass")
    return cls


def validate_connectors(cfg: HubConfig) -> dict[str, Any]:
    """Validate every connector block against its connector's Config; all problems at once."""
    problems: list[str] = []
    out: dict[str, Any] = {}
    for name, block in cfg.connectors.items():
        kind = block.get("kind")
        try:
            cls = connector_class(str(kind))
        except KeyError:
            known = sorted(connector_kinds())
            close = difflib.get_close_matches(str(kind), known, n=1)
            hint = f"did you mean `kind: {close[0]}`? " if close else ""
            problems.append(f"connectors.{name}.kind: unknown connector kind {kind!r}. Fix: {hint}"
                            f"installed kinds: {', '.join(known) or 'none'}")
            continue
        try:
            out[name] = cls.Config.model_validate(block)
        except ValidationError as err:
            problems.extend(format_validation_error(err, f"connectors.{name}"))
            continue
        wanted = out[name].streams
        if wanted:
            have = {s.name for s in cls(out[name], ConnectorContext(name=name)).streams()}
            for s in wanted:
                if s not in have:
                    problems.append(
                        f"connectors.{name}.streams: {kind} has no stream {s!r}. Fix: use some of: {', '.join(sorted(have))}"
                    )
    if problems:
        raise ConfigError(cfg.path or "crmhub.yaml", problems)
    return out


class ConnectorFactory:
    """Builds connector instances; one request budget per instance, shared by all its streams."""

    def __init__(self, cfg: HubConfig, *, transport: Any = None, sleep: Any = None,
                 budget_factory: Callable[[str, float, int], RateBudget] | None = None,
                 token_store: Any = None):
        self.cfg = cfg
        self.configs = validate_connectors(cfg)
        self.transport = transport
        self.sleep = sleep
        #: builds the budget an instance's streams (and, shared through the database, its
        #: workers) draw from; without one, a budget per process
        self.budget_factory = budget_factory
        self._budgets: dict[str, RateBudget] = {}
        self.token_store = token_store  # lent to every connector for OAuth tokens

    def kind(self, name: str) -> str:
        return str(self.configs[name].kind)

    def names(self, enabled_only: bool = True) -> list[str]:
        return [n for n, c in self.configs.items() if c.enabled or not enabled_only]

    def build(self, name: str, field_hints: dict[str, list[str]] | None = None) -> Connector:
        if name not in self.configs:
            known = ", ".join(self.configs) or "none configured"
            raise KeyError(f"no connector instance {name!r} in the config (have: {known})")
        conf = self.configs[name]
        cls = connector_class(conf.kind)
        budget = self._budgets.get(name)
        if budget is None:
            rate = getattr(conf, "requests_per_second", None) or cls.default_rate
            burst = max(1, cls.default_burst)
            if rate and self.budget_factory is not None:
                budget = self._budgets[name] = self.budget_factory(name, rate, burst)
            else:
                budget = self._budgets[name] = TokenBucket(rate or 0, burst)
        ctx = ConnectorContext(name=name, budget=budget, transport=self.transport, sleep=self.sleep,
                               field_hints=field_hints or {}, token_store=self.token_store)
        return cls(conf, ctx)
