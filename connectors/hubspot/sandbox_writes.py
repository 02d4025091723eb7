"""The HubSpot sandbox's write and settings endpoints: batch create/update/upsert, associations v4
batch read, owners and pipelines (the HTTP routes are in ``sandbox.py``).

Shapes follow HubSpot's CRM v3 objects reference (``BatchInputSimplePublicObjectBatchInputForCreate``,
``...BatchInput``, ``...BatchInputUpsert``; ``BatchResponseSimplePublicObject`` and
``...WithErrors``: ``status``, ``results``, ``numErrors``, ``errors`` of ``StandardError``,
``startedAt``, ``completedAt``), the associations v4 guide, the owners and the pipelines guides.
How HubSpot splits failures between a whole-batch 4xx and a 207 is documented loosely; the
sandbox does what reports and SDK issues show [S], and each choice below is marked:

- at most 100 inputs, else 400; the same id twice in one batch, 400 (``Duplicate IDs found``);
- create: any invalid input fails the whole batch (400 ``VALIDATION_ERROR``, "Property values
  were not valid: [...]"), nothing is created; a contact whose email exists is 409 ``CONFLICT``
  "Contact already exists. Existing ID: N" [S];
- update: invalid values fail the whole batch (400); ids that do not exist are a 207 with one
  ``OBJECT_NOT_FOUND`` error whose ``context.ids`` lists them, the others applied [S];
- upsert: each input is decided alone; invalid ones come back in a 207's ``errors`` with
  ``context.ids`` naming the input's id, the others applied [U]; ``idProperty`` must be
  ``hs_object_id`` or a unique property (contacts: ``email``), else 400 [S];
- ``objectWriteTraceId`` of an input is echoed on its result [V: vendor-apis.md, spec].
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

from connectors.hubspot.sandbox_data import (
    ID_BASE,
    NUMBER_PROPS,
    READ_ONLY,
    SandboxError,
    SandboxStore,
    decode_after,
    encode_after,
    resolve_type,
)
from connectors.hubspot.sandbox_engagements import ASSOC_TYPE_IDS, OWNERS, PIPELINES

__all__ = ["BATCH_MAX", "associations_batch_read", "batch_write", "list_owners", "list_pipelines"]

BATCH_MAX = 100
OWNERS_MAX_LIMIT = 500
#: properties HubSpot lets an upsert key on, per type (besides hs_object_id)
UNIQUE_PROPS = {"contacts": frozenset({"email"})}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$", re.IGNORECASE)
_OBJECT_NAME = {"contacts": "CONTACT", "companies": "COMPANY", "deals": "DEAL", "calls": "CALL",
                "emails": "EMAIL", "meetings": "MEETING", "notes": "NOTE", "tasks": "TASK"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _problems(store: SandboxStore, t: str, props: Any) -> list[dict[str, Any]]:
    """HubSpot's per-property validation results for one input (empty: valid)."""
    if not isinstance(props, dict):
        return [{"isValid": False, "message": "properties must be an object", "error": "INVALID_INPUT", "name": ""}]
    out = []
    known = store.known(t)
    for name, value in props.items():
        if name not in known:
            out.append({"isValid": False, "message": f'Property "{name}" does not exist',
                        "error": "PROPERTY_DOESNT_EXIST", "name": name})
        elif name in READ_ONLY:
            out.append({"isValid": False, "message": f"{name} is a read only property; its value cannot be set.",
                        "error": "READ_ONLY_VALUE", "name": name})
        elif value not in (None, "") and name == "email" and not _EMAIL.match(str(value)):
            out.append({"isValid": False, "message": f"Email address {value} is invalid", "error": "INVALID_EMAIL",
                        "name": name})
        elif value not in (None, "") and name in NUMBER_PROPS:
            try:
                float(str(value))
            except ValueError:
                out.append({"isValid": False, "message": f"{value} was not a valid number.",
                            "error": "INVALID_DOUBLE", "name": name})
    return out


def _invalid(problems: list[dict[str, Any]]) -> SandboxError:
    return SandboxError(400, f"Property values were not valid: {orjson.dumps(problems).decode()}")


def _result(store: SandboxStore, t: str, i: int, item: dict[str, Any], extra: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    props = [*list(item.get("properties") or {}), "hs_object_id"]
    obj = store.render(t, i, props)
    if item.get("objectWriteTraceId"):
        obj["objectWriteTraceId"] = item["objectWriteTraceId"]
    return {**obj, **(extra or {})}


def _envelope(results: list[dict[str, Any]], errors: list[dict[str, Any]], started: str,
              ok_status: int) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": _now()}
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = errors
        return 207, body
    return ok_status, body


def batch_write(store: SandboxStore, object_type: str, action: str, body: Any) -> tuple[int, dict[str, Any]]:
    """``POST /crm/v3/objects/{type}/batch/{create|update|upsert}``: (status, body)."""
    t = resolve_type(object_type)
    if action not in ("create", "update", "upsert"):
        raise SandboxError(404, f"Unknown batch action {action!r}", "OBJECT_NOT_FOUND")
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list) or not all(isinstance(x, dict) for x in inputs):
        raise SandboxError(400, "Invalid input JSON: `inputs` must be a list of objects")
    if len(inputs) > BATCH_MAX:
        raise SandboxError(400, f"Batch input limit is {BATCH_MAX}, got {len(inputs)} inputs")
    if action != "create":
        keys = [str(x.get("id", "")).lower() for x in inputs]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise SandboxError(400, f"Duplicate IDs found in batch input: {dupes}. IDs must be unique")
    started = _now()
    with store.lock:
        if action == "create":
            return _create(store, t, inputs, started)
        if action == "update":
            return _update(store, t, inputs, started)
        return _upsert(store, t, inputs, started)


def _create(store: SandboxStore, t: str, inputs: list[dict[str, Any]], started: str) -> tuple[int, dict[str, Any]]:
    problems = [p for x in inputs for p in _problems(store, t, x.get("properties"))]
    if problems:
        raise _invalid(problems)
    if t == "contacts":
        for x in inputs:
            email = (x.get("properties") or {}).get("email")
            found = store.find_by(t, "email", email) if email else None
            if found is not None:
                raise SandboxError(409, f"Contact already exists. Existing ID: {ID_BASE[t] + found}", "CONFLICT")
    results = []
    for x in inputs:
        (rid,) = store.create(t, 1, x.get("properties") or {})
        i = store.index_of(t, rid)
        assert i is not None
        results.append(_result(store, t, i, x))
    return _envelope(results, [], started, 201)


def _update(store: SandboxStore, t: str, inputs: list[dict[str, Any]], started: str) -> tuple[int, dict[str, Any]]:
    problems = [p for x in inputs for p in _problems(store, t, x.get("properties"))]
    if problems:
        raise _invalid(problems)
    results, missing = [], []
    for x in inputs:
        id_prop = x.get("idProperty") or "hs_object_id"
        i = _lookup(store, t, id_prop, x.get("id"))
        if i is None:
            missing.append(str(x.get("id")))
            continue
        store.modify(t, ids=[str(ID_BASE[t] + i)], properties=x.get("properties") or {})
        results.append(_result(store, t, i, x))
    errors = []
    if missing:
        errors.append({"status": "error", "category": "OBJECT_NOT_FOUND",
                       "message": f"Could not get some {_OBJECT_NAME[t]} objects, they may be deleted or not exist. "
                                  "Check that ids are valid.", "context": {"ids": missing}})
    return _envelope(results, errors, started, 200)


def _upsert(store: SandboxStore, t: str, inputs: list[dict[str, Any]], started: str) -> tuple[int, dict[str, Any]]:
    results, errors = [], []
    for x in inputs:
        id_prop = str(x.get("idProperty") or "hs_object_id")
        if id_prop != "hs_object_id" and id_prop not in UNIQUE_PROPS.get(t, ()):
            raise SandboxError(400, f"Unable to perform update/upsert by non-unique {t} property {id_prop!r}")
        props = dict(x.get("properties") or {})
        problems = _problems(store, t, props)
        if id_prop == "email" and not _EMAIL.match(str(x.get("id") or "")):
            problems.append({"isValid": False, "message": f"Email address {x.get('id')} is invalid",
                             "error": "INVALID_EMAIL", "name": "email"})
        if problems:
            errors.append({"status": "error", "category": "VALIDATION_ERROR",
                           "message": f"Property values were not valid: {orjson.dumps(problems).decode()}",
                           "context": {"ids": [str(x.get("id"))]}})
            continue
        i = _lookup(store, t, id_prop, x.get("id"))
        if i is None:
            if id_prop == "hs_object_id":
                errors.append({"status": "error", "category": "OBJECT_NOT_FOUND",
                               "message": f"Could not get some {_OBJECT_NAME[t]} objects, they may be deleted or not "
                                          "exist. Check that ids are valid.", "context": {"ids": [str(x.get("id"))]}})
                continue
            (rid,) = store.create(t, 1, {**props, id_prop: x.get("id")})
            i = store.index_of(t, rid)
            assert i is not None
            results.append(_result(store, t, i, x, {"new": True}))
        else:
            store.modify(t, ids=[str(ID_BASE[t] + i)], properties=props)
            results.append(_result(store, t, i, x, {"new": False}))
    return _envelope(results, errors, started, 200)


def _lookup(store: SandboxStore, t: str, id_prop: str, value: Any) -> int | None:
    if value in (None, ""):
        return None
    if id_prop == "hs_object_id":
        return store.get(t, value)
    return store.find_by(t, id_prop, value)


def associations_batch_read(store: SandboxStore, from_type: str, to_type: str, body: Any) -> tuple[int, dict[str, Any]]:
    """``POST /crm/v4/associations/{from}/{to}/batch/read``: each input's associated ids with their
    types. An input with no associations is left out of ``results`` and named in ``errors`` [U]."""
    f, to = resolve_type(from_type), resolve_type(to_type)
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list) or not all(isinstance(x, dict) and "id" in x for x in inputs):
        raise SandboxError(400, "Invalid input JSON: `inputs` must be a list of {id}")
    if len(inputs) > 1000:
        raise SandboxError(400, f"Batch input limit is 1000, got {len(inputs)}")
    started = _now()
    results, errors = [], []
    type_id = ASSOC_TYPE_IDS.get((f, to))
    with store.lock:
        for x in inputs:
            i = store.get(f, x["id"])
            found = store.render(f, i, [], [to]).get("associations", {}).get(to) if i is not None else None
            if not found or type_id is None:
                errors.append({"status": "error", "category": "OBJECT_NOT_FOUND",
                               "message": f"No {to} is associated with {f} {x['id']}.",
                               "context": {"fromObjectId": [str(x["id"])]}})
                continue
            results.append({"from": {"id": str(x["id"])}, "to": [
                {"toObjectId": int(a["id"]), "associationTypes": [
                    {"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": None}]} for a in found["results"]]})
    return _envelope(results, errors, started, 200)


def list_owners(limit: int, after: str | None, email: str | None, archived: bool) -> dict[str, Any]:
    """``GET /crm/v3/owners``: ``limit`` (≤500), ``after``, ``email``, ``archived``."""
    rows = [o for o in OWNERS if bool(o["archived"]) == archived and (not email or o["email"] == email.lower())]
    start = 0
    if after:
        last = decode_after(after)
        start = next((k + 1 for k, o in enumerate(rows) if int(o["id"]) == last), len(rows))
    limit = max(1, min(limit, OWNERS_MAX_LIMIT))
    page = rows[start:start + limit]
    out: dict[str, Any] = {"results": page}
    if start + limit < len(rows):
        token = encode_after(int(page[-1]["id"]))
        out["paging"] = {"next": {"after": token, "link": f"?after={token}"}}
    return out


def list_pipelines(object_type: str) -> dict[str, Any]:
    """``GET /crm/v3/pipelines/{objectType}``: every pipeline with its stages (no paging)."""
    t = resolve_type(object_type)
    if t not in PIPELINES:
        raise SandboxError(404, f"No pipelines for object type {object_type}", "OBJECT_NOT_FOUND")
    return {"results": PIPELINES[t]}
