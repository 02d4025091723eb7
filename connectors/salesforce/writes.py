"""The write side: upserts by external ID through sObject collections, results per record.

``PATCH /composite/sobjects/{SObject}/{ExternalIdField}`` with ``{"allOrNone": false, "records": [...]}``
(≤200 records, one object type, API 46.0+) answers 200 with one result per record, in input
order: ``{"id", "success", "created", "errors": [{"statusCode", "message", "fields"}]}``. A
record's failure is its result; only a failure of the whole call (auth, rate limit) raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from hub.sdk import AuthError, FatalError, RetriableError, WriteResult
from hub.sdk.http import IDEMPOTENT

if TYPE_CHECKING:
    from connectors.salesforce.api import SalesforceApi

__all__ = ["upsert"]

_Outcome = tuple[bool, str | None, bool, str | None]  # ok, Salesforce id, created, error
_FIELD_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def _errors(item: dict[str, Any]) -> str:
    parts = []
    for e in item.get("errors") or []:
        if isinstance(e, dict):
            fields = f" ({', '.join(map(str, e['fields']))})" if e.get("fields") else ""
            parts.append(f"{e.get('statusCode') or e.get('errorCode')}: {e.get('message')}{fields}")
    return "; ".join(parts) or "failed without an error message"


def _prepare(sobject: str, ext_field: str, change: Any) -> tuple[str, dict[str, Any]] | str:
    """(external-ID value, record body) or the reason the change cannot be sent."""
    if not isinstance(change, dict):
        return f"a change must be a dict of {sobject} fields, not {type(change).__name__}"
    value = change.get(ext_field)
    if value is None or str(value).strip() == "":
        return f"no value for the external-ID field {ext_field}"
    body: dict[str, Any] = {"attributes": {"type": sobject}}
    for name, v in change.items():
        if name in ("_key", "Id", "attributes"):
            continue  # Id and attributes are Salesforce's to set
        if not isinstance(name, str) or not name or not name[0].isalpha() or not set(name) <= _FIELD_OK:
            return f"not a Salesforce field name: {name!r}"
        body[name] = v
    try:
        orjson.dumps(body)
    except TypeError as err:
        return f"a value cannot be sent as JSON: {err}"
    return str(value), body


def upsert(api: SalesforceApi, sobject: str, ext_field: str, changes: Sequence[Any], batch: int) -> list[WriteResult]:
    results: list[WriteResult | None] = [None] * len(changes)
    # one record per external-ID value in a call: later changes to the same record are merged into it
    order: list[str] = []
    merged: dict[str, dict[str, Any]] = {}
    owners: dict[str, list[int]] = {}
    for i, change in enumerate(changes):
        prepared = _prepare(sobject, ext_field, change)
        key = change.get("_key") if isinstance(change, dict) else None
        if isinstance(prepared, str):
            results[i] = WriteResult(external_id=None, ok=False, error=prepared,
                                     key=str(key) if key is not None else None)
            continue
        value, body = prepared
        if value not in merged:
            order.append(value)
            merged[value] = body
        else:
            merged[value].update(body)
        owners.setdefault(value, []).append(i)
    url = f"{api.session.data_path}/composite/sobjects/{sobject}/{ext_field}"
    for start in range(0, len(order), batch):
        chunk = order[start:start + batch]
        outcome = _send(api, url, [merged[v] for v in chunk])
        for value, (ok, sf_id, created, error) in zip(chunk, outcome, strict=True):
            for i in owners[value]:
                key = changes[i].get("_key", value)
                results[i] = WriteResult(external_id=sf_id, ok=ok, created=created and i == owners[value][0],
                                         error=error, key=str(key))
    return [r for r in results if r is not None]


def _send(api: SalesforceApi, url: str, records: list[dict[str, Any]]) -> list[_Outcome]:
    body = orjson.dumps({"allOrNone": False, "records": records})
    try:
        # An upsert by external ID may repeat: a retry after a lost answer updates, never duplicates.
        data = api.json("PATCH", url, content=body, headers={"Content-Type": "application/json"},
                        extensions={IDEMPOTENT: True})
    except (AuthError, RetriableError):
        raise  # the whole call: the engine retries or stops, the records are not to blame
    except FatalError as err:
        return [(False, None, False, str(err))] * len(records)
    if not isinstance(data, list) or len(data) != len(records):
        why = f"Salesforce answered the upsert of {len(records)} records with {str(data)[:200]}"
        return [(False, None, False, why)] * len(records)
    out: list[_Outcome] = []
    for item in data:
        if not isinstance(item, dict):
            out.append((False, None, False, f"unexpected result {item!r}"))
        elif item.get("success") is True:
            out.append((True, str(item.get("id")) if item.get("id") else None, bool(item.get("created")), None))
        else:
            out.append((False, str(item.get("id")) if item.get("id") else None, False, _errors(item)))
    return out
