"""`crmhub.yaml`: load, substitute `${ENV}` references, validate, explain mistakes.

Every error names the key (as a dotted path) and says how to fix it; all problems
are reported at once, not one per run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from hub.objects import ObjectConfig, check_objects
from state.db import DEFAULT_SQLITE_URL

__all__ = ["ConfigError", "HubConfig", "SyncSettings", "WaveConfig", "load_config"]

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
INSTANCE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class ConfigError(Exception):
    """A config that cannot be used; `problems` are 'key: what is wrong. Fix: ...' lines."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + ("\n  ".join(["invalid configuration:", *problems])))


class SyncSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retry_max_attempts: int = Field(5, ge=1, description="attempts before a bad record is dead-lettered")
    retry_backoff_seconds: float = Field(60.0, ge=0)
    lease_ttl_seconds: float = Field(120.0, gt=0)
    prefetch_pages: int = Field(2, ge=0, le=16)
    #: vendor pages are joined until a commit holds at least this many records (hub.sync.group_pages)
    commit_records: int = Field(1000, ge=1, le=50_000)
    #: PostgreSQL: wait for the WAL flush on every page commit. Off by default: a page's
    #: data and its cursor commit together, so a commit lost to a database crash only
    #: means those pages are read again (see docs/guarantees.md).
    durable_page_commits: bool = False


class IdentitySettings(BaseModel):
    """Identity resolution settings (hub.identity, hub.transforms)."""

    model_config = ConfigDict(extra="forbid")

    #: the country of phone numbers written without a country code (`(415) 555-0100`)
    default_region: str = Field("US", pattern=r"^[A-Z]{2}$")


class WaveConfig(BaseModel):
    """One wave of a migration (hub.migrate): a selection on a root stream of a source connector.

    `where` filters the root stream (SQL in the legacy database's dialect for `legacy_sql`, SQLite's
    for other sources); `ids_file` lists root ids one per line instead; neither: every root record.
    Records of the source's other streams follow the root record they reference.
    """

    model_config = ConfigDict(extra="forbid")

    source: str
    root: str
    where: str | None = None
    ids_file: str | None = None
    description: str | None = None


class HubConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database: str = DEFAULT_SQLITE_URL
    connectors: dict[str, dict[str, Any]] = Field(default_factory=dict)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    #: a folder of mapping YAML read before the packaged defaults (relative to the config file)
    mappings_dir: str = "mappings"
    ownership: dict[str, Any] = Field(default_factory=dict)
    #: who owns a lead or contact a sync creates (hub.routing; validated there, key by key)
    routing: dict[str, Any] = Field(default_factory=dict)
    identity: IdentitySettings = Field(default_factory=lambda: IdentitySettings())
    #: custom objects: canonical entities declared here, one typed table each (hub.objects)
    objects: dict[str, ObjectConfig] = Field(default_factory=dict)
    #: waves of a migration from a legacy source (`crmhub migrate`, docs/migrations.md)
    waves: dict[str, WaveConfig] = Field(default_factory=dict)
    #: where the file came from, for relative paths and messages
    path: str | None = None

    @field_validator("connectors")
    @classmethod
    def _names(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, block in value.items():
            if not INSTANCE_NAME.match(name):
                raise ValueError(
                    f"instance name {name!r} must be lowercase letters, digits and _ starting with a letter "
                    "(it names the system in ownership rules and the change log)"
                )
            if not isinstance(block, dict) or "kind" not in block:
                raise ValueError(f"{name}: add `kind: <connector>` (for example `kind: hubspot`)")
        return value

    @field_validator("waves")
    @classmethod
    def _waves(cls, value: dict[str, WaveConfig], info: ValidationInfo) -> dict[str, WaveConfig]:
        connectors = info.data.get("connectors") or {}
        for name, w in value.items():
            if not INSTANCE_NAME.match(name):
                raise ValueError(f"wave name {name!r} must be lowercase letters, digits and _ starting with a letter. "
                                 f"Fix: rename waves.{name}")
            if w.source not in connectors:
                known = ", ".join(connectors) or "none configured"
                raise ValueError(f"waves.{name}.source names {w.source!r}, which is not a connector instance. "
                                 f"Fix: use one of: {known}")
            if w.where is not None and w.ids_file is not None:
                raise ValueError(f"waves.{name} has both `where` and `ids_file`. Fix: keep one of them")
        return value

    def base_dir(self) -> Path:
        return Path(self.path).parent if self.path else Path.cwd()


def _substitute(value: Any, path: str, problems: list[str]) -> Any:
    """Replace `${VAR}` (or `${VAR:-default}`) in every string, reporting unset ones by key."""
    if isinstance(value, dict):
        return {k: _substitute(v, f"{path}.{k}" if path else str(k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        def repl(m: re.Match[str]) -> str:
            var, default = m.group(1), m.group(2)
            got = os.environ.get(var)
            if got is None:
                if default is not None:
                    return default
                problems.append(
                    f"{path}: refers to ${{{var}}}, which is not set. Fix: export {var}=... "
                    f"before running crmhub (or write `${{{var}:-default}}`)"
                )
                return ""
            return got
        return ENV_REF.sub(repl, value)
    return value


def format_validation_error(err: ValidationError, prefix: str = "") -> list[str]:
    out = []
    for e in err.errors():
        key = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        kind = e["type"]
        if kind == "missing":
            fix = f"add `{e['loc'][-1]}:`"
        elif kind == "extra_forbidden":
            fix = "remove it, or check its spelling"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            fix = f"{msg[0].lower()}{msg[1:]}"
        what = "missing" if kind == "missing" else "not allowed here" if kind == "extra_forbidden" else "invalid"
        # only a scalar is quoted back: a whole block may hold secrets
        value = e.get("input")
        quotable = isinstance(value, int | float | bool) or (
            isinstance(value, str) and not any(w in key for w in ("secret", "token", "key", "password")))
        got = "" if kind in ("missing", "extra_forbidden") or not quotable else f" (got {value!r})"
        out.append(f"{key}: {what}{got}. Fix: {fix}")
    return out


def parse_config(data: Any, source: str = "crmhub.yaml", path: str | None = None) -> HubConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): must be a mapping of keys such as `database:` and `connectors:`"])
    problems: list[str] = []
    data = _substitute(data, "", problems)
    problems.extend(check_objects(data.get("objects")))
    try:
        cfg = HubConfig.model_validate({**data, "path": path})
    except ValidationError as err:
        said = {p.split(":", 1)[0] for p in problems}  # a key already reported is not reported twice
        problems.extend(p for p in format_validation_error(err) if p.split(":", 1)[0] not in said)
        raise ConfigError(source, problems) from None
    if problems:
        raise ConfigError(source, problems)
    override = os.environ.get("CRMHUB_DATABASE_URL")
    if override:
        cfg.database = override
    return cfg


def load_config(path: str | os.PathLike[str] | None = None) -> HubConfig:
    """Read `path` (default `$CRMHUB_CONFIG`, then `./crmhub.yaml`); a missing default file is empty."""
    explicit = path is not None or "CRMHUB_CONFIG" in os.environ
    p = Path(path or os.environ.get("CRMHUB_CONFIG") or "crmhub.yaml")
    if not p.exists():
        if explicit:
            raise ConfigError(str(p), [f"(file): {p} does not exist. Fix: pass --config with an existing file"])
        return parse_config({}, "defaults")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError(str(p), [f"(yaml) {where}: {getattr(err, 'problem', err)}. Fix: correct the YAML syntax"]) from None
    return parse_config(data, str(p), str(p.resolve()))
