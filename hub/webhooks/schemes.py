"""Which connector kinds accept webhooks, and how: a verifier and a parser per kind.

A kind without a scheme has no webhook endpoint (the server answers 404 and says
so). A connector package that brings a new vendor registers its own::

    register_scheme(WebhookScheme("acme", lambda secrets: AcmeVerifier(secrets), parse_acme))

The server needs neither the connector class nor its validated config: the scheme
comes from the instance's `kind`, the secrets from its `webhook_secrets` list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from hub.webhooks.signatures import (
    AircallTokenVerifier,
    HubSpotV3Verifier,
    StripeVerifier,
    TwilioVerifier,
    Verifier,
)

__all__ = ["BadPayload", "ParsedEvent", "WebhookScheme", "register_scheme", "scheme_for", "schemes"]


class BadPayload(Exception):
    """A verified request whose body is not what the vendor sends (answered 400, not stored)."""


@dataclass(frozen=True)
class ParsedEvent:
    event_id: str
    raw: str  # JSON text of the event, as stored in the inbox


#: (raw body, content type, url) -> events
Parser = Callable[[bytes, str, str], list[ParsedEvent]]


@dataclass(frozen=True)
class WebhookScheme:
    kind: str
    verifier: Callable[[Sequence[str]], Verifier]
    parse: Parser


def body_hash(raw: bytes) -> str:
    """The fallback event id when the vendor gives none: a redelivery has the same body."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _json(raw: bytes) -> Any:
    # PostgreSQL's jsonb refuses NUL in strings; refuse it here rather than fail a whole batch.
    if b"\\u0000" in raw:
        raise BadPayload("JSON with a \\u0000 escape cannot be stored")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise BadPayload(f"malformed JSON: {err}") from None


def _event_id(value: Any, fallback: bytes) -> str:
    if isinstance(value, (str, int)) and not isinstance(value, bool) and 0 < len(str(value)) <= 255:
        return str(value)
    return body_hash(fallback)


def parse_stripe(raw: bytes, content_type: str, url: str) -> list[ParsedEvent]:
    """One Stripe event object per delivery; its id (`evt_...`) is the dedupe key."""
    doc = _json(raw)
    if not isinstance(doc, dict):
        raise BadPayload("a Stripe event must be a JSON object")
    return [ParsedEvent(_event_id(doc.get("id"), raw), raw.decode())]


def parse_hubspot(raw: bytes, content_type: str, url: str) -> list[ParsedEvent]:
    """A JSON array of events (up to 100 a request), one inbox row each, keyed by `eventId`."""
    doc = _json(raw)
    items = doc if isinstance(doc, list) else [doc]
    if not items or not all(isinstance(i, dict) for i in items):
        raise BadPayload("a HubSpot delivery must be a non-empty JSON array of objects")
    if len(items) == 1 and isinstance(doc, dict):
        return [ParsedEvent(_event_id(doc.get("eventId"), raw), raw.decode())]
    out = []
    for item in items:
        text = orjson.dumps(item)
        out.append(ParsedEvent(_event_id(item.get("eventId"), text), text.decode()))
    return out


def parse_twilio(raw: bytes, content_type: str, url: str) -> list[ParsedEvent]:
    """Form-encoded status callbacks (JSON ones where the URL carries `bodySHA256`).

    Twilio gives no event id: the body's hash is the key (a retry sends the same body).
    """
    if "bodySHA256" in dict(parse_qsl(urlsplit(url).query)) or content_type.startswith("application/json"):
        _json(raw)
        return [ParsedEvent(body_hash(raw), raw.decode())]
    try:
        pairs = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise BadPayload("body is not form-encoded") from None
    form: dict[str, Any] = {}
    for k, v in pairs:
        if k in form:  # a repeated key keeps every value
            prev = form[k]
            form[k] = [*prev, v] if isinstance(prev, list) else [prev, v]
        else:
            form[k] = v
    text = orjson.dumps(form).decode()
    if "\\u0000" in text:
        raise BadPayload("a form value with a NUL character cannot be stored")
    return [ParsedEvent(body_hash(raw), text)]


def parse_aircall(raw: bytes, content_type: str, url: str) -> list[ParsedEvent]:
    """One `{resource, event, timestamp, token, data}` envelope per delivery, stored without its
    `token` (a secret). Aircall gives no event id: the key is the hash of the envelope without the
    token, keys sorted, so a redelivery of the same event is stored once."""
    doc = _json(raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("event"), str):
        raise BadPayload("an Aircall webhook must be a JSON object with an `event`")
    doc.pop("token", None)
    text = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    return [ParsedEvent(body_hash(text), text.decode())]


_SCHEMES: dict[str, WebhookScheme] = {}


def register_scheme(scheme: WebhookScheme) -> None:
    _SCHEMES[scheme.kind] = scheme


def scheme_for(kind: str) -> WebhookScheme | None:
    return _SCHEMES.get(kind)


def schemes() -> dict[str, WebhookScheme]:
    return dict(_SCHEMES)


register_scheme(WebhookScheme("stripe", StripeVerifier, parse_stripe))
register_scheme(WebhookScheme("hubspot", HubSpotV3Verifier, parse_hubspot))
register_scheme(WebhookScheme("twilio", TwilioVerifier, parse_twilio))
register_scheme(WebhookScheme("aircall", AircallTokenVerifier, parse_aircall))
