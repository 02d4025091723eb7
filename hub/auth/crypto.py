"""Encryption at rest for OAuth tokens: AES-256-GCM under a key from `CRMHUB_SECRET_KEY`.

    cipher = TokenCipher.from_env()          # SecretKeyError naming the variable if it is missing
    blob = cipher.encrypt(b"...", context="hubspot_main\\0")
    cipher.decrypt(blob, context="hubspot_main\\0")

The variable holds one or more keys, comma-separated, each 32 random bytes in URL-safe base64
(`crmhub auth keygen` prints one). The first key encrypts; every key decrypts, so a key is
rotated by putting the new one first and keeping the old one until every token was rewritten.

A blob is `v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`. The key id (8 hex digits of
SHA-256 of the key) says which key to try, and is no help to anyone without the key. `context`
(the connector and subject) is the GCM associated data: a ciphertext copied onto another row
does not decrypt there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hub.sdk.errors import FatalError

__all__ = ["ENV_VAR", "SecretKeyError", "TokenCipher", "new_key"]

ENV_VAR = "CRMHUB_SECRET_KEY"
_PREFIX = "v1"
_NONCE = 12
_HOW_TO = (
    f"Fix: create a key with `crmhub auth keygen` (or `python -c \"import base64, os; "
    f"print(base64.urlsafe_b64encode(os.urandom(32)).decode())\"`), then `export {ENV_VAR}=<key>` "
    "wherever crmhub runs, and keep it safe: tokens stored under a lost key must be re-authorised "
    "with `crmhub auth login`."
)


class SecretKeyError(FatalError):
    """`CRMHUB_SECRET_KEY` is missing or malformed, or a stored token cannot be decrypted with it."""


def new_key() -> str:
    """A fresh key for `CRMHUB_SECRET_KEY`."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


class TokenCipher:
    """Encrypts and decrypts token blobs; the first key encrypts, all of them decrypt."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise SecretKeyError(f"{ENV_VAR} holds no key. {_HOW_TO}")
        for key in keys:
            if len(key) != 32:
                raise SecretKeyError(f"{ENV_VAR}: every key must decode to 32 bytes (got {len(key)}). {_HOW_TO}")
        self._keys = {_key_id(k): AESGCM(k) for k in keys}
        self._current = _key_id(keys[0])

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TokenCipher:
        """The cipher for the keys in `CRMHUB_SECRET_KEY`; a clear error when it is unset or malformed."""
        raw = (os.environ if environ is None else environ).get(ENV_VAR, "").strip()
        if not raw:
            raise SecretKeyError(f"{ENV_VAR} is not set, and OAuth tokens are stored encrypted with it. {_HOW_TO}")
        keys: list[bytes] = []
        for i, part in enumerate(p.strip() for p in raw.split(",")):
            if not part:
                continue
            try:
                keys.append(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
            except (binascii.Error, ValueError):
                # never echo the value: it is a secret, even when malformed
                raise SecretKeyError(f"{ENV_VAR}: key #{i + 1} is not URL-safe base64. {_HOW_TO}") from None
        return cls(keys)

    def encrypt(self, plaintext: bytes, *, context: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._keys[self._current].encrypt(nonce, plaintext, context.encode())
        return f"{_PREFIX}.{self._current}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, blob: str, *, context: str) -> bytes:
        try:
            prefix, key_id, body = blob.split(".", 2)
        except ValueError:
            raise SecretKeyError("a stored token is not in the crmhub encrypted format") from None
        if prefix != _PREFIX:
            raise SecretKeyError(f"a stored token has an unknown format version {prefix!r}")
        aead = self._keys.get(key_id)
        if aead is None:
            raise SecretKeyError(
                f"a stored token was encrypted with a key that is not in {ENV_VAR} (key id {key_id}); "
                f"put that key back in {ENV_VAR} (after the current one), or run `crmhub auth login` again"
            )
        try:
            raw = base64.urlsafe_b64decode(body)
            return aead.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode())
        except (InvalidTag, binascii.Error, ValueError):
            raise SecretKeyError(
                f"a stored token failed its integrity check under key id {key_id} "
                "(tampered with, or copied from another connector); run `crmhub auth login` again"
            ) from None

