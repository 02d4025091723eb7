"""Declarative mappings: how a connector's streams land on canonical fields.

A mapping file (`mappings/<kind>.yaml`, or `mappings/<instance>.yaml` to override one
instance) looks like::

    kind: hubspot
    streams:
      contacts:
        target: contact
        fields:
          email: {path: properties.email, transform: email}
          first_name: properties.firstname
          created_at: {path: properties.createdate, transform: timestamp}
        references:            # another entity of the same connector, by its external id
          account_id: {path: properties.associatedcompanyid, entity: account}
        custom:                # into the entity's JSON `custom` column
          hubspot_owner: properties.hubspot_owner_id

Every mistake (unknown target, field, transform, bad path) fails at load time with
the file, line and key. Mapping a record is a few dict look-ups per field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hub.transforms import MappingError, Transform, build_transform, output_type
from state.schema import ENTITY_TABLES

__all__ = ["MappedRecord", "MappingLoadError", "Mappings", "StreamMapping", "load_mappings"]

#: columns the hub manages itself: a mapping may not write them
RESERVED = {"id", "custom", "archived_at", "provenance"}


class MappingLoadError(Exception):
    def __init__(self, file: str, line: int | None, key: str, message: str):
        self.file, self.line, self.key = file, line, key
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {key}: {message}")


def _load_with_lines(text: str, file: str) -> tuple[Any, dict[str, int]]:
    """YAML data plus the line of every key, by dotted path."""
    lines: dict[str, int] = {}
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise MappingLoadError(file, mark.line + 1 if mark else None, "(yaml)", str(getattr(err, "problem", err))) from None

    def walk(n: Any, path: str) -> Any:
        if isinstance(n, yaml.MappingNode):
            out = {}
            for k, v in n.value:
                key = str(k.value)
                p = f"{path}.{key}" if path else key
                lines[p] = k.start_mark.line + 1
                out[key] = walk(v, p)
            return out
        if isinstance(n, yaml.SequenceNode):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(n.value)]
        if n is None:
            return None
        return yaml.SafeLoader(text).construct_object(n, deep=True)

    return walk(node, ""), lines


def _kind(t: Any) -> str:
    """A column's type as the mapping's type check speaks of it."""
    name = type(getattr(t, "impl", t)).__name__.lower()
    if "datetime" in name or "timestamp" in name:
        return "timestamp"
    for word, kind in (("date", "date"), ("numeric", "number"), ("float", "number"), ("integer", "integer"),
                       ("boolean", "boolean"), ("string", "text"), ("text", "text")):
        if word in name:
            return kind
    return "any"


def _list_getter(paths: list[str]) -> Callable[[Any], Any]:
    """A list path: the values of several paths, for transforms that combine them."""
    getters = [_getter(p) for p in paths]
    return lambda d: [g(d) for g in getters]


def _getter(path: str) -> Callable[[Any], Any]:
    """A fast getter for a dotted path; `[n]` indexes lists. A missing step gives None."""
    steps: list[str | int] = []
    for part in path.split("."):
        if not part:
            raise ValueError(f"empty step in path {path!r}")
        while "[" in part:
            head, _, rest = part.partition("[")
            idx, _, part = rest.partition("]")
            if head:
                steps.append(head)
            steps.append(int(idx))
        if part:
            steps.append(part)
    if len(steps) == 2 and all(isinstance(s, str) for s in steps):
        a, b = steps

        def get2(d: Any) -> Any:
            inner = d.get(a)
            return inner.get(b) if isinstance(inner, dict) else None
        return get2

    def get(d: Any) -> Any:
        for s in steps:
            if isinstance(s, int):
                if not isinstance(d, list) or len(d) <= s:
                    return None
                d = d[s]
            elif isinstance(d, dict):
                d = d.get(s)
            else:
                return None
        return d
    return get


@dataclass(slots=True)
class FieldRule:
    name: str
    get: Callable[[Any], Any]
    transforms: tuple[Transform, ...]

    def apply(self, raw: dict[str, Any]) -> Any:
        v = self.get(raw)
        for t in self.transforms:
            v = t(v)
        return v


@dataclass(slots=True)
class MappedRecord:
    values: dict[str, Any]
    refs: dict[str, str]  # canonical field -> external id of the referenced entity
    custom: dict[str, Any] | None


@dataclass
class StreamMapping:
    stream: str
    target: str
    fields: list[FieldRule]
    references: dict[str, tuple[str, Callable[[Any], Any]]] = field(default_factory=dict)
    custom: list[FieldRule] = field(default_factory=list)
    #: every vendor path the mapping reads (a connector may fetch just these)
    paths: list[str] = field(default_factory=list)

    def map(self, raw: dict[str, Any]) -> MappedRecord:
        values: dict[str, Any] = {}
        for rule in self.fields:
            try:
                values[rule.name] = rule.apply(raw)
            except MappingError as err:
                raise MappingError(f"{rule.name}: {err}") from None
        refs = {}
        for name, (_entity, get) in self.references.items():
            v = get(raw)
            if v not in (None, ""):
                refs[name] = str(v)
        custom = None
        if self.custom:
            custom = {}
            for rule in self.custom:
                v = rule.apply(raw)
                if v is not None:
                    custom[rule.name] = v
        return MappedRecord(values, refs, custom)


class Mappings:
    """The mappings of every connector instance, found by instance name then by kind."""

    def __init__(self, search_dirs: list[Path | Any]):
        self.search_dirs = search_dirs
        self._cache: dict[str, dict[str, StreamMapping]] = {}

    def for_connector(self, instance: str, kind: str) -> dict[str, StreamMapping]:
        key = f"{instance}/{kind}"
        if key not in self._cache:
            self._cache[key] = self._load(instance, kind)
        return self._cache[key]

    def stream(self, instance: str, kind: str, stream: str, target: str | None = None) -> StreamMapping:
        """The stream's mapping. An activity stream needs none when its connector builds the
        events itself (`RawRecord.activity`): it gets an empty one (`target` says so)."""
        if target == "activity":
            try:
                streams = self.for_connector(instance, kind)
            except MappingLoadError:
                streams = {}
            return streams.get(stream) or StreamMapping(stream, "activity", [])
        streams = self.for_connector(instance, kind)
        if stream not in streams:
            raise MappingLoadError(f"mappings/{kind}.yaml", None, f"streams.{stream}",
                                   f"no mapping for stream {stream!r}. Fix: add `streams: {{{stream}: ...}}`")
        return streams[stream]

    def _load(self, instance: str, kind: str) -> dict[str, StreamMapping]:
        for d in self.search_dirs:
            for name in (f"{instance}.yaml", f"{kind}.yaml"):
                p = d / name
                if p.is_file():
                    return parse_mapping(p.read_text(encoding="utf-8"), str(p))
        raise MappingLoadError(f"mappings/{kind}.yaml", None, kind,
                               f"no mapping file for connector {instance!r} (kind {kind}). "
                               f"Fix: add mappings/{kind}.yaml beside crmhub.yaml")


def parse_mapping(text: str, file: str) -> dict[str, StreamMapping]:
    data, lines = _load_with_lines(text, file)

    def err(key: str, message: str) -> MappingLoadError:
        return MappingLoadError(file, lines.get(key), key, message)

    if not isinstance(data, dict) or not isinstance(data.get("streams"), dict):
        raise err("streams", "a mapping file needs `streams:` with one block per stream")
    out: dict[str, StreamMapping] = {}
    for stream, block in data["streams"].items():
        base = f"streams.{stream}"
        if not isinstance(block, dict):
            raise err(base, "must be a mapping with `target:` and `fields:`")
        target = block.get("target")
        if target not in ENTITY_TABLES and target != "activity":
            raise err(f"{base}.target", f"unknown target {target!r}. Fix: use one of "
                      f"{', '.join([*ENTITY_TABLES, 'activity'])}")
        columns = set(ENTITY_TABLES[target].c.keys()) if target in ENTITY_TABLES else None
        column_types = ({c.name: _kind(c.type) for c in ENTITY_TABLES[target].c}
                        if target in ENTITY_TABLES else None)

        def _check_type(name: str, kind: str, chain: list[Any], key: str) -> None:
            out = output_type(chain[-1]) if chain else "raw"
            ok = {"text": {"text", "any", "raw"}, "timestamp": {"timestamp", "any"}, "date": {"date", "timestamp", "any"},
                  "number": {"number", "integer", "any"}, "integer": {"integer", "any"},
                  "boolean": {"boolean", "any"}}.get(kind)
            if ok is not None and out not in ok:
                fix = {"timestamp": "timestamp", "date": "date", "number": "decimal", "integer": "int",
                       "boolean": "bool"}.get(kind, "string")
                got = "a raw vendor value" if out == "raw" else f"{out} (from {chain[-1]!r})"
                raise err(key, f"type mismatch: {target}.{name} is {kind}"  # noqa: B023
                          f", the mapping gives {got}. "
                          f"Fix: end the transform chain with `{fix}`")

        def rule(name: str, spec: Any, key: str) -> FieldRule:
            if isinstance(spec, str):
                spec = {"path": spec}
            if not isinstance(spec, dict):
                raise err(key, "must be a path string or {path: ..., transform: ...}")
            unknown = set(spec) - {"path", "transform"}
            if unknown:
                raise err(key, f"unknown keys {sorted(unknown)}. Fix: use `path:` and `transform:`")
            path = spec.get("path")
            if isinstance(path, str):
                paths.append(path)  # noqa: B023 - rule() runs within this iteration
            elif isinstance(path, list) and path and all(isinstance(p, str) for p in path):
                paths.extend(path)  # noqa: B023
            elif path is not None:
                raise err(key, f"bad path {path!r}: a path is a string, or a list of strings "
                          "(for concat, minor_units)")
            chain = spec.get("transform") or []
            if not isinstance(chain, list):
                chain = [chain]
            try:
                get = _list_getter(path) if isinstance(path, list) else _getter(path) if path else (lambda _d: None)
            except (ValueError, AttributeError) as e:
                raise err(key, f"bad path {path!r}: {e}") from None
            if column_types is not None and name in column_types:  # noqa: B023
                _check_type(name, column_types[name], chain, key)  # noqa: B023
            if path is None and not any(isinstance(t, dict) and ("constant" in t or "default" in t) for t in chain):
                raise err(key, "needs a `path:` (or a `constant:`/`default:` transform)")
            fns = []
            for t in chain:
                try:
                    fns.append(build_transform(t))
                except (KeyError, TypeError) as e:
                    from hub.transforms import PARAM_TRANSFORMS, TRANSFORMS
                    known = ", ".join(sorted({*TRANSFORMS, *PARAM_TRANSFORMS}))
                    detail = "" if isinstance(e, KeyError) else f" ({e})"
                    raise err(key, f"unknown transform {t!r}{detail}. Fix: use one of {known}") from None
            return FieldRule(name, get, tuple(fns))

        fields = []
        paths: list[str] = []
        for name, spec in (block.get("fields") or {}).items():
            key = f"{base}.fields.{name}"
            if columns is not None and (name not in columns or name in RESERVED):
                allowed = ", ".join(sorted(columns - RESERVED))
                raise err(key, f"{target} has no field {name!r}. Fix: use one of {allowed}, "
                          "or put it under `custom:`")
            fields.append(rule(name, spec, key))
        refs = {}
        for name, spec in (block.get("references") or {}).items():
            key = f"{base}.references.{name}"
            if not isinstance(spec, dict) or "path" not in spec or spec.get("entity") not in ENTITY_TABLES:
                raise err(key, "needs {path: ..., entity: account|contact|lead|opportunity}")
            if columns is not None and name not in columns:
                raise err(key, f"{target} has no field {name!r}")
            refs[name] = (spec["entity"], _getter(spec["path"]))
            paths.append(spec["path"])
        custom = [rule(name, spec, f"{base}.custom.{name}") for name, spec in (block.get("custom") or {}).items()]
        out[stream] = StreamMapping(stream, target, fields, refs, custom, paths)
    return out


def load_mappings(config_dir: Path | None, mappings_dir: str = "mappings") -> Mappings:
    """User mappings beside crmhub.yaml first, then the packaged defaults."""
    dirs: list[Any] = []
    if config_dir is not None:
        user = config_dir / mappings_dir
        if user.is_dir():
            dirs.append(user)
    dirs.append(resources.files("mappings"))
    return Mappings(dirs)
