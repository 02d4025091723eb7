"""Custom objects declared in crmhub.yaml: canonical entities an ops person adds without code.

    objects:
      subscription:
        fields:
          plan: text
          status: text
          mrr: decimal
          seats: integer
          renews_on: date
          started_at: timestamp
          account_id: {references: account}
        match: [code]          # optional identity keys (compared case-blind), one or two

Field types: text, integer, decimal, boolean, date, timestamp, or `{references: <entity>}` (the
canonical id of an account, contact, lead, opportunity or another custom object). Every object
also has id, owner_id, created_at, updated_at, archived_at, custom (JSON) and provenance.

A mapping stream with `target: subscription` then fills it (mappings/<connector>.yaml), through
the same identity, ownership (`subscription.status: {rule: owner, system: ...}`), provenance,
change log, `crmhub explain subscription <id>` and migration paths as a contact. Adding a field
or an object is a config edit: the table follows on the next run (state.custom).
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hub.identity import MATCH_KEYS, MatchKey, norm_name
from state.custom import BUILT_IN, FIELD_TYPES, REFERENCE, ObjectDef, define

__all__ = ["ObjectConfig", "activate", "check_objects"]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
#: columns every entity has: declaring one again is a mistake
COMMON = ("id", "owner_id", "created_at", "updated_at", "archived_at", "custom", "provenance")


def _type_of(name: str, spec: Any) -> str:
    """A field's declared type, `reference:<entity>` for a reference; ValueError says the fix."""
    if isinstance(spec, dict):
        if set(spec) == {"references"} and isinstance(spec["references"], str):
            return f"{REFERENCE}:{spec['references']}"
        if set(spec) != {"type"}:
            raise ValueError(f"not a field type. Fix: write a type (`{name}: text`) or `{name}: {{references: account}}`")
        spec = spec["type"]
    if spec not in FIELD_TYPES:
        close = difflib.get_close_matches(str(spec), list(FIELD_TYPES), n=1)
        hint = f"`{name}: {close[0]}`" if close else "one of " + ", ".join(FIELD_TYPES)
        raise ValueError(f"unknown type {spec!r}. Fix: use {hint}, or `{{references: <entity>}}`")
    return str(spec)


class ObjectConfig(BaseModel):
    """One custom object under `objects:` (its fields are checked by `check_objects`, key by key)."""

    model_config = ConfigDict(extra="forbid")

    fields: dict[str, Any]
    match: list[str] = Field(default_factory=list, max_length=2)
    description: str | None = None

    def types(self) -> dict[str, str]:
        """field -> type, `reference:<entity>` for a reference."""
        return {f: _type_of(f, spec) for f, spec in self.fields.items()}

    def to_def(self, name: str) -> ObjectDef:
        return ObjectDef(name, tuple(self.types().items()), tuple(self.match))


def check_objects(raw: Any) -> list[str]:
    """Every problem of the raw `objects:` block, each as `objects.<key>: what. Fix: how`."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        return ["objects: must be a mapping of object name -> {fields: ...}. Fix: see docs in hub/objects.py"]
    problems: list[str] = []
    known = [*sorted(BUILT_IN - {"activity"}), *[str(n) for n in raw]]
    for name, block in raw.items():
        where = f"objects.{name}"
        if not _NAME.match(str(name)):
            problems.append(f"{where}: an object name must be lowercase letters, digits and _ starting "
                            "with a letter, at most 40 characters. Fix: rename it")
        elif name in BUILT_IN:
            problems.append(f"{where}: {name!r} is a built-in entity. Fix: give the custom object another name, "
                            f"or map onto the built-in {name} directly")
        if not isinstance(block, dict) or not isinstance(block.get("fields"), dict) or not block["fields"]:
            problems.append(f"{where}.fields: missing or empty. Fix: declare at least one field, "
                            "for example `fields: {code: text}`")
            continue
        types: dict[str, str] = {}
        for f, spec in block["fields"].items():
            key = f"{where}.fields.{f}"
            if not _NAME.match(str(f)):
                problems.append(f"{key}: a field name must be lowercase letters, digits and _ starting with a "
                                "letter (it is a column name). Fix: rename it")
                continue
            if f in COMMON:
                problems.append(f"{key}: every object has {f!r} already ({', '.join(COMMON)}). "
                                "Fix: remove it; a mapping can write it as it is")
                continue
            try:
                types[f] = _type_of(f, spec)
            except ValueError as e:
                problems.append(f"{key}: {e}")
                continue
            if types[f].startswith(REFERENCE + ":"):
                entity = types[f].split(":", 1)[1]
                if entity not in known:
                    close = difflib.get_close_matches(entity, known, n=1)
                    hint = f"`references: {close[0]}`" if close else "one of " + ", ".join(known)
                    problems.append(f"{key}: references unknown entity {entity!r}. Fix: use {hint}")
        for f in block.get("match") or []:
            if f in types and types[f] != "text":
                problems.append(f"{where}.match: names {f!r}, which is {types[f]}, not text. Fix: match on a text field "
                                "(an external code, a name)")
            elif f not in types and f not in block["fields"]:
                problems.append(f"{where}.match: names {f!r}, which is not a field of {name}. "
                                "Fix: declare it under fields, as text")
    return problems


_CUSTOM_KEYS: set[str] = set()


def activate(objects: dict[str, ObjectConfig]) -> None:
    """Make the config's objects canonical entities of this process (tables, identity keys)."""
    define(obj.to_def(name) for name, obj in objects.items())
    for name in _CUSTOM_KEYS:
        MATCH_KEYS.pop(name, None)
    _CUSTOM_KEYS.clear()
    for name, obj in objects.items():
        if obj.match:
            MATCH_KEYS[name] = tuple(MatchKey(f, norm_name, True) for f in obj.match)
            _CUSTOM_KEYS.add(name)
