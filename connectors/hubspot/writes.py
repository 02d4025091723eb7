"""HubSpot's write side: batch create, update and upsert, 100 inputs a call.

A change (what `HubSpotConnector.write(stream, changes)` takes) is a dict::

    {"op": "create" | "update" | "upsert",        # optional, see below
     "id": "512",                                  # update: the HubSpot id; upsert: the id_property value
     "id_property": "email",                       # upsert: a unique property (contacts: email)
     "fields": {"first_name": "Ann"},              # canonical names (WRITE_FIELDS), and/or
     "properties": {"hs_lead_status": "NEW"},      # HubSpot property names, as is
     "key": "change-log-seq-42"}                   # the caller's correlation/idempotency key

Without `op`: an `id` means update, an `id_property` means upsert, and a contact with an email
but no id is upserted by email (so a repeated create cannot make a second contact); anything
else is a create. Values are sent as strings (None clears a property: "").

Idempotency: HubSpot takes no idempotency key, so a write is safe to repeat only when the
operation is: update (by id) and upsert (by a unique property) are sent with the retry layer's
IDEMPOTENT mark (retried on 5xx and timeouts); a create is not repeated after it may have reached
HubSpot, and its records come back as failures saying the outcome is unknown. Every input
carries `objectWriteTraceId` (the caller's key, or one made up), which HubSpot echoes on its
result; results are matched to inputs by it, then by id.

Changes are sent grouped by operation (creates, then updates, then upserts), each group in the
order given; a record changed twice in one call goes in two consecutive batches, so the later
change lands last.

Outcomes, per record, as `WriteResult`s in the order of `changes`:
- 200/201 and 207 multi-status: each result is a success, each error names its inputs (by
  `context.ids` or trace id); an input nobody reported on fails with the unattributed errors.
- 400 (`VALIDATION_ERROR`) or 409 (`CONFLICT`) on a batch of several: HubSpot refused the whole
  batch for one bad input without saying which, so the batch is split in halves and each half is
  sent again, down to the single bad input, which fails with HubSpot's message.
- other 4xx: every input of the batch fails with the message; a 2xx whose body is not JSON (an
  HTML page from a proxy) fails the batch's inputs with a clear error; nothing crashes the sync.
- raised, not returned: 401/403 (`AuthError`), 429 after the retries (`RateLimited`), and 5xx or
  transport failures on update/upsert (`RetriableError`: safe to send again as a whole).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson

from hub.sdk import Redactor, RetriableError, WriteResult, raise_for_status

__all__ = ["BATCH_MAX", "UPSERT_KEYS", "WRITE_FIELDS", "BatchWriter"]

BATCH_MAX = 100  # HubSpot's batch endpoints take at most 100 inputs
#: canonical field -> HubSpot property, per writable stream (the inverse of mappings/hubspot.yaml)
WRITE_FIELDS: dict[str, dict[str, str]] = {
    "contacts": {"first_name": "firstname", "last_name": "lastname", "email": "email", "phone": "phone",
                 "title": "jobtitle", "lifecycle_stage": "lifecyclestage", "owner_id": "hubspot_owner_id"},
    "companies": {"name": "name", "domain": "domain", "industry": "industry", "owner_id": "hubspot_owner_id"},
    "deals": {"name": "dealname", "pipeline": "pipeline", "stage": "dealstage", "amount": "amount",
              "currency": "deal_currency_code", "close_date": "closedate", "owner_id": "hubspot_owner_id"},
}
#: the unique property a create may be turned into an upsert on
UPSERT_KEYS = {"contacts": "email"}
_SPLIT_CATEGORIES = frozenset({"VALIDATION_ERROR", "CONFLICT"})
_ERROR_CHARS = 500

#: sends one batch: (path, JSON body, idempotent) -> the raw response (retried by the SDK client)
Post = Callable[[str, dict[str, Any], bool], httpx.Response]


@dataclass(slots=True)
class _Input:
    pos: int
    op: str
    body: dict[str, Any]
    trace: str
    key: str | None
    ref: str | None  # what HubSpot's errors call the input by: its id (update/upsert)


def _value(v: Any) -> str:
    if v is None:
        return ""  # HubSpot clears a property set to the empty string
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime):
        return str(int(v.timestamp() * 1000))
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, Decimal | float):
        return format(v, "f") if isinstance(v, Decimal) else repr(v)
    return str(v)


class BatchWriter:
    """Writes one stream's changes for `HubSpotConnector.write` (see the module docstring)."""

    def __init__(self, stream: str, obj: str, post: Post, redactor: Redactor, trace_prefix: str) -> None:
        self.stream, self.obj, self.post, self.redactor = stream, obj, post, redactor
        self.trace_prefix = trace_prefix
        self.requests = 0

    # -- changes to inputs -------------------------------------------------------------------------

    def _input(self, pos: int, change: Any) -> _Input | WriteResult:
        if not isinstance(change, dict):
            return WriteResult(None, ok=False, error=f"change {pos} is not an object: {type(change).__name__}")
        key = change.get("key")
        key = None if key is None else str(key)
        props: dict[str, str] = {}
        names = WRITE_FIELDS.get(self.stream, {})
        for name, v in (change.get("fields") or {}).items():
            if name not in names:
                return WriteResult(change.get("id"), ok=False, key=key,
                                   error=f"{self.stream}: no HubSpot property for the canonical field {name!r} "
                                         f"(writable: {', '.join(sorted(names)) or 'none'})")
            props[names[name]] = _value(v)
        props.update({str(k): _value(v) for k, v in (change.get("properties") or {}).items()})
        rid = change.get("id")
        rid = None if rid in (None, "") else str(rid)
        id_prop = change.get("id_property")
        op = change.get("op")
        if op is None:
            unique = UPSERT_KEYS.get(self.stream)
            if rid is not None:
                op = "upsert" if id_prop else "update"
            elif id_prop:
                op = "upsert"
            elif unique and props.get(unique):
                op, id_prop, rid = "upsert", unique, props[unique]
            else:
                op = "create"
        if op not in ("create", "update", "upsert"):
            return WriteResult(rid, ok=False, key=key, error=f"unknown op {op!r} (create, update or upsert)")
        if op != "create" and rid is None:
            return WriteResult(None, ok=False, key=key, error=f"an {op} needs an id")
        if op == "upsert" and not id_prop:
            return WriteResult(rid, ok=False, key=key, error="an upsert needs an id_property")
        if not props and op != "upsert":
            return WriteResult(rid, ok=False, key=key, error="nothing to write: no fields or properties")
        trace = key or f"{self.trace_prefix}-{pos}"
        body: dict[str, Any] = {"properties": props, "objectWriteTraceId": trace}
        if op != "create":
            body["id"] = rid
        if id_prop and op != "create":
            body["idProperty"] = str(id_prop)
        return _Input(pos, op, body, trace, key, rid)

    @staticmethod
    def _chunks(inputs: list[_Input]) -> list[list[_Input]]:
        """≤100 per batch, in order; an id seen twice starts a new batch (HubSpot refuses duplicates,
        and the later change must land after the earlier)."""
        out: list[list[_Input]] = []
        cur: list[_Input] = []
        seen: set[str] = set()
        for inp in inputs:
            ref = (inp.ref or "").lower()
            if len(cur) >= BATCH_MAX or (ref and ref in seen):
                out.append(cur)
                cur, seen = [], set()
            cur.append(inp)
            if ref:
                seen.add(ref)
        if cur:
            out.append(cur)
        return out

    # -- writing -----------------------------------------------------------------------------------

    def write(self, changes: Sequence[Any]) -> list[WriteResult]:
        results: dict[int, WriteResult] = {}
        inputs: list[_Input] = []
        for pos, change in enumerate(changes):
            got = self._input(pos, change)
            if isinstance(got, WriteResult):
                results[pos] = got
            else:
                inputs.append(got)
        by_op = sorted(inputs, key=lambda i: ("create", "update", "upsert").index(i.op))
        for _op, group in itertools.groupby(by_op, key=lambda i: i.op):
            for chunk in self._chunks(list(group)):
                results.update(self._send(chunk))
        return [results[pos] for pos in range(len(changes))]

    def _send(self, chunk: list[_Input]) -> dict[int, WriteResult]:
        op = chunk[0].op
        idempotent = op != "create"
        try:
            self.requests += 1
            resp = self.post(f"/crm/v3/objects/{self.obj}/batch/{op}", {"inputs": [i.body for i in chunk]},
                             idempotent)
        except RetriableError as exc:
            if idempotent:
                raise
            return self._fail(chunk, f"outcome unknown, not resent (a create is not idempotent): {exc}")
        status = resp.status_code
        if status in (200, 201, 207):
            return self._match(chunk, resp)
        if status in (401, 403, 429) or (status >= 500 and idempotent):
            raise_for_status(resp, self.redactor)
        body = self._json(resp)
        message = self._message(resp, body)
        if status >= 500:
            return self._fail(chunk, f"outcome unknown, not resent (a create is not idempotent): {message}")
        category = str(body.get("category") or "") if isinstance(body, dict) else ""
        if len(chunk) > 1 and category in _SPLIT_CATEGORIES:
            # one bad input fails the whole batch, unnamed: halve until it is alone
            half = len(chunk) // 2
            return {**self._send(chunk[:half]), **self._send(chunk[half:])}
        return self._fail(chunk, message)

    def _match(self, chunk: list[_Input], resp: httpx.Response) -> dict[int, WriteResult]:
        body = self._json(resp)
        if not isinstance(body, dict):
            return self._fail(chunk, self._not_json(resp))
        by_trace = {i.trace: i for i in chunk}
        by_ref = {i.ref.lower(): i for i in chunk if i.ref}
        out: dict[int, WriteResult] = {}
        results = [r for r in body.get("results") or [] if isinstance(r, dict)]
        echoed = any(r.get("objectWriteTraceId") for r in results)
        for n, r in enumerate(results):
            inp = by_trace.get(str(r.get("objectWriteTraceId") or "")) or by_ref.get(str(r.get("id", "")).lower())
            if inp is None and not echoed and not body.get("errors") and len(results) == len(chunk):
                inp = chunk[n]  # no trace ids echoed and nothing failed: results follow the inputs
            if inp is None or inp.pos in out:
                continue
            created = inp.op == "create" or bool(r.get("new"))
            out[inp.pos] = WriteResult(str(r.get("id")) if r.get("id") is not None else inp.ref, ok=True,
                                       created=created, key=inp.key or inp.trace)
        loose: list[str] = []
        for e in body.get("errors") or []:
            if not isinstance(e, dict):
                continue
            message = self._clip(f"{e.get('category') or 'ERROR'}: {e.get('message') or e}")
            ctx = e.get("context") or {}
            named = [by_trace.get(str(t)) for t in ctx.get("objectWriteTraceId") or []]
            named += [by_ref.get(str(x).lower()) for x in ctx.get("ids") or ctx.get("id") or []]
            hits = [i for i in named if i is not None and i.pos not in out]
            for inp in hits:
                out[inp.pos] = self._failure(inp, message)
            if not hits:
                loose.append(message)
        missing = [i for i in chunk if i.pos not in out]
        reason = "; ".join(loose) or f"HubSpot answered {resp.status_code} without a result for this input"
        out.update({i.pos: self._failure(i, reason) for i in missing})
        return out

    # -- helpers -----------------------------------------------------------------------------------

    def _failure(self, inp: _Input, error: str) -> WriteResult:
        return WriteResult(inp.ref, ok=False, error=error, key=inp.key or inp.trace)

    def _fail(self, chunk: list[_Input], error: str) -> dict[int, WriteResult]:
        return {i.pos: self._failure(i, self._clip(error)) for i in chunk}

    def _clip(self, text: str) -> str:
        text = self.redactor.redact(text[:65536])
        return text if len(text) <= _ERROR_CHARS else text[:_ERROR_CHARS] + "..."

    @staticmethod
    def _json(resp: httpx.Response) -> Any:
        try:
            return orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            return None

    def _not_json(self, resp: httpx.Response) -> str:
        ctype = resp.headers.get("content-type", "no content type")
        text = " ".join(self.redactor.redact(resp.text[:65536]).split())[:200]
        return (f"HubSpot answered {resp.status_code} to batch/{self.obj} with a body that is not JSON "
                f"({ctype}): {text!r}")

    def _message(self, resp: httpx.Response, body: Any) -> str:
        if not isinstance(body, dict):
            return self._not_json(resp)
        return f"HubSpot answered {resp.status_code}: {body.get('category') or 'ERROR'}: {body.get('message') or body}"
