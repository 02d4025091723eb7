"""Webhook signature verifiers: small pure objects with one method.

    verifier.verify(headers, raw_body, url, now)   # returns None, or raises BadSignature(reason)

`headers` is any case-insensitive mapping (starlette's `Headers`, httpx's), or a plain
dict with lower-case keys; `raw_body` the exact bytes received; `url` the URL as the
vendor was told it (scheme, host, port, path, query); `now` Unix seconds. Every
verifier accepts several secrets, so a secret can be rolled without downtime: a
request passes if any secret verifies it. Digests are compared in constant time.
Aircall signs nothing: its verifier compares the `token` field of the JSON body instead
(constant time too), and its parser keeps that token out of the inbox.

The `sign_*` functions make the headers a vendor would send (tests, benchmarks,
sandboxes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit, urlunsplit

__all__ = [
    "AircallTokenVerifier",
    "BadSignature",
    "HubSpotV3Verifier",
    "StripeVerifier",
    "TwilioVerifier",
    "Verifier",
    "sign_hubspot_v3",
    "sign_stripe",
    "sign_twilio",
    "twilio_signature",
]

DEFAULT_TOLERANCE = 300.0  # seconds; Stripe's DEFAULT_TOLERANCE, HubSpot's MAX_ALLOWED_TIMESTAMP


class BadSignature(Exception):
    """The request is not provably from the vendor; `reason` says why (safe to return)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class Verifier(Protocol):
    #: request headers the verifier reads that may be stored with the event (never the signature)
    kept_headers: tuple[str, ...]

    def verify(self, headers: Mapping[str, str], raw_body: bytes, url: str, now: float) -> None: ...


def _secrets(secrets: Sequence[str]) -> tuple[bytes, ...]:
    if isinstance(secrets, str) or not secrets or not all(isinstance(s, str) and s for s in secrets):
        raise ValueError("secrets must be a non-empty list of non-empty strings")
    return tuple(s.encode() for s in secrets)


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name.lower())  # ASGI header names are lower-case
    if value is None:
        value = headers.get(name)
    if not value:
        raise BadSignature(f"missing {name} header")
    return value


def _check_age(signed_at: float, now: float, tolerance: float) -> None:
    # Both directions: a timestamp far in the future would stretch the replay window.
    if abs(now - signed_at) > tolerance:
        raise BadSignature(f"timestamp outside the tolerance of {tolerance:g} s")


# -- Stripe --------------------------------------------------------------------------------------

class StripeVerifier:
    """`Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`, HMAC-SHA256 over `t.payload`.

    Any v1 matching any secret passes (during a roll Stripe sends one v1 per secret); v0
    and unknown schemes are ignored.
    """

    kept_headers: tuple[str, ...] = ()

    def __init__(self, secrets: Sequence[str], tolerance: float = DEFAULT_TOLERANCE):
        self.secrets = _secrets(secrets)
        self.tolerance = tolerance

    def verify(self, headers: Mapping[str, str], raw_body: bytes, url: str, now: float) -> None:
        header = _header(headers, "Stripe-Signature")
        timestamp: str | None = None
        candidates: list[str] = []
        for part in header.split(","):
            key, sep, value = part.strip().partition("=")
            if not sep:
                continue
            if key == "t":
                timestamp = value
            elif key == "v1":
                candidates.append(value)
        if timestamp is None or not timestamp.isdigit():
            raise BadSignature("Stripe-Signature has no valid t= timestamp")
        if not candidates:
            raise BadSignature("Stripe-Signature has no v1 signature")
        signed = timestamp.encode() + b"." + raw_body
        expected = [hmac.new(s, signed, hashlib.sha256).hexdigest() for s in self.secrets]
        # Verify before the age check: an expired but genuine request is worth telling apart.
        if not any(hmac.compare_digest(e, c) for e in expected for c in candidates):
            raise BadSignature("no Stripe v1 signature matches")
        _check_age(int(timestamp), now, self.tolerance)


def sign_stripe(secret: str, payload: bytes, timestamp: int, *extra_secrets: str) -> str:
    """The `Stripe-Signature` header value for `payload` (one v1 per secret)."""
    signed = str(timestamp).encode() + b"." + payload
    v1 = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in (secret, *extra_secrets)]
    return ",".join([f"t={timestamp}", *(f"v1={v}" for v in v1)])


# -- HubSpot v3 ----------------------------------------------------------------------------------

# HubSpot signs the URI with these characters decoded (and no others).
_HUBSPOT_DECODE = {"%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$", "%27": "'",
                   "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";"}


def _hubspot_uri(url: str) -> str:
    for enc, dec in _HUBSPOT_DECODE.items():
        url = url.replace(enc, dec).replace(enc.lower(), dec)
    return url


def _hubspot_digest(secret: bytes, method: str, url: str, raw_body: bytes, timestamp: str) -> str:
    source = method.encode() + _hubspot_uri(url).encode() + raw_body + timestamp.encode()
    return base64.b64encode(hmac.new(secret, source, hashlib.sha256).digest()).decode()


class HubSpotV3Verifier:
    """`X-HubSpot-Signature-v3`: base64 HMAC-SHA256 of method + uri + body + timestamp (ms),
    with the app's client secret; requests older than 5 minutes are refused."""

    kept_headers: tuple[str, ...] = ("x-hubspot-request-timestamp",)

    def __init__(self, secrets: Sequence[str], tolerance: float = DEFAULT_TOLERANCE, method: str = "POST"):
        self.secrets = _secrets(secrets)
        self.tolerance = tolerance
        self.method = method

    def verify(self, headers: Mapping[str, str], raw_body: bytes, url: str, now: float) -> None:
        signature = _header(headers, "X-HubSpot-Signature-v3")
        timestamp = _header(headers, "X-HubSpot-Request-Timestamp")
        if not timestamp.isdigit():
            raise BadSignature("X-HubSpot-Request-Timestamp is not milliseconds")
        if not any(hmac.compare_digest(_hubspot_digest(s, self.method, url, raw_body, timestamp), signature)
                   for s in self.secrets):
            raise BadSignature("X-HubSpot-Signature-v3 does not match")
        _check_age(int(timestamp) / 1000, now, self.tolerance)


def sign_hubspot_v3(secret: str, url: str, payload: bytes, timestamp_ms: int, method: str = "POST") -> dict[str, str]:
    """The headers HubSpot would send for `payload` posted to `url`."""
    ts = str(timestamp_ms)
    return {"X-HubSpot-Signature-v3": _hubspot_digest(secret.encode(), method, url, payload, ts),
            "X-HubSpot-Request-Timestamp": ts}


# -- Twilio --------------------------------------------------------------------------------------

def twilio_signature(secret: str | bytes, url: str, params: Mapping[str, str] | Sequence[tuple[str, str]]) -> str:
    """base64 HMAC-SHA1 of url + key+value for each sorted key (values sorted too), as twilio-python."""
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    grouped: dict[str, set[str]] = {}
    for k, v in pairs:
        grouped.setdefault(k, set()).add(v)
    data = url + "".join(k + v for k in sorted(grouped) for v in sorted(grouped[k]))
    key = secret.encode() if isinstance(secret, str) else secret
    return base64.b64encode(hmac.new(key, data.encode(), hashlib.sha1).digest()).decode()


def _url_variants(url: str) -> list[str]:
    """The URL as given, plus with/without the default port: Twilio may sign either form."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    out = [url]
    if default is None or parts.hostname is None:
        return out
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    if parts.port is None:
        out.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}")))
    elif parts.port == default:
        out.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}")))
    return out


class TwilioVerifier:
    """`X-Twilio-Signature`: base64 HMAC-SHA1 (auth token) of the full URL plus the sorted form
    parameters. JSON bodies are signed through a `bodySHA256` query parameter instead."""

    kept_headers: tuple[str, ...] = ("i-twilio-idempotency-token",)

    def __init__(self, secrets: Sequence[str]):
        self.secrets = _secrets(secrets)

    def verify(self, headers: Mapping[str, str], raw_body: bytes, url: str, now: float) -> None:
        signature = _header(headers, "X-Twilio-Signature")
        query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        if "bodySHA256" in query:
            params: list[tuple[str, str]] = []
            if not hmac.compare_digest(hashlib.sha256(raw_body).hexdigest(), query["bodySHA256"]):
                raise BadSignature("body does not match bodySHA256")
        else:
            try:
                params = parse_qsl(raw_body.decode(), keep_blank_values=True, strict_parsing=bool(raw_body))
            except (UnicodeDecodeError, ValueError):
                raise BadSignature("body is not form-encoded") from None
        for candidate in _url_variants(url):
            for s in self.secrets:
                if hmac.compare_digest(twilio_signature(s, candidate, params), signature):
                    return
        raise BadSignature("X-Twilio-Signature does not match")


def sign_twilio(secret: str, url: str, params: Mapping[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": twilio_signature(secret, url, params)}


# -- Aircall -------------------------------------------------------------------------------------

class AircallTokenVerifier:
    """Aircall signs nothing: each webhook's JSON body carries the `token` Aircall returned when the
    webhook was created. It is compared in constant time with each configured token (vendor-apis.md
    section 8). The token never reaches the inbox: the parser drops it."""

    kept_headers: tuple[str, ...] = ()

    def __init__(self, secrets: Sequence[str]):
        self.secrets = _secrets(secrets)

    def verify(self, headers: Mapping[str, str], raw_body: bytes, url: str, now: float) -> None:
        try:
            doc = json.loads(raw_body)
        except (UnicodeDecodeError, ValueError):
            raise BadSignature("body is not JSON, so it carries no Aircall token") from None
        token = doc.get("token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise BadSignature("missing token field")
        given = token.encode()
        # every secret is compared, so the time taken does not say which one nearly matched
        matched = [hmac.compare_digest(given, s) for s in self.secrets]
        if not any(matched):
            raise BadSignature("token does not match")
