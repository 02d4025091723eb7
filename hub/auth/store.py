"""The hub's `TokenStore`: OAuth tokens in `hub.oauth_tokens`, encrypted with `CRMHUB_SECRET_KEY`.

The whole token dict (access, refresh and id tokens, `instance_url`, scopes ...) is one AES-GCM blob
bound to its (connector, subject); only `expires_at`, the version and the needs-reauth mark are
in clear, for `crmhub status`. The key is read on first use, so a hub whose connectors use API
keys only never needs it.

Renewals are serialised per token: on PostgreSQL by a transaction-scoped advisory lock (every
worker, every machine), on SQLite (one worker) by a lock in this process. The write itself is a
compare-and-set on `version` either way (`state.tokens.compare_and_set`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Engine

from hub.auth.crypto import TokenCipher
from hub.sdk.oauth import StoredToken
from state import tokens

__all__ = ["DbTokenStore"]

_process_locks: dict[tuple[str, str, str], threading.Lock] = {}
_process_guard = threading.Lock()


def _now() -> datetime:
    return datetime.now(UTC)


class DbTokenStore:
    """`hub.sdk.oauth.TokenStore` over the database (see the module docstring)."""

    def __init__(self, engine: Engine, cipher: TokenCipher | None = None, *, serialize_refresh: bool = True) -> None:
        self.engine = engine
        self._cipher = cipher
        #: False leaves only the compare-and-set (tests of the race it resolves)
        self.serialize_refresh = serialize_refresh

    @property
    def cipher(self) -> TokenCipher:
        if self._cipher is None:
            self._cipher = TokenCipher.from_env()
        return self._cipher

    # -- encoding --------------------------------------------------------------------------------

    @staticmethod
    def _context(connector: str, subject: str) -> str:
        return f"{connector}\0{subject}"

    def _seal(self, connector: str, subject: str, token: dict[str, Any]) -> tuple[str, datetime | None]:
        blob = self.cipher.encrypt(orjson.dumps(token), context=self._context(connector, subject))
        exp = token.get("expires_at")
        return blob, datetime.fromtimestamp(exp, UTC) if isinstance(exp, int | float) else None

    def _open(self, row: dict[str, Any]) -> StoredToken:
        blob = row["token_encrypted"]
        token: dict[str, Any] = {}
        if blob:
            token = orjson.loads(self.cipher.decrypt(blob, context=self._context(row["connector"], row["subject"])))
        return StoredToken(token, int(row["version"]), bool(row["needs_reauth"]), row["reauth_reason"])

    # -- TokenStore ------------------------------------------------------------------------------

    def load(self, connector: str, subject: str) -> StoredToken | None:
        with self.engine.connect() as conn:
            row = tokens.get_token(conn, connector, subject)
        return self._open(row) if row else None

    def save(self, connector: str, subject: str, token: dict[str, Any]) -> StoredToken:
        blob, expires_at = self._seal(connector, subject, token)
        with self.engine.begin() as conn:
            version = tokens.put_token(conn, connector, subject, blob, expires_at, _now())
        return StoredToken(dict(token), version)

    def replace(self, connector: str, subject: str, token: dict[str, Any], *,
                expected_version: int) -> StoredToken | None:
        blob, expires_at = self._seal(connector, subject, token)
        with self.engine.begin() as conn:
            version = tokens.compare_and_set(conn, connector, subject, expected_version, blob, expires_at, _now())
        return None if version is None else StoredToken(dict(token), version)

    def mark_needs_reauth(self, connector: str, subject: str, reason: str, *,
                          expected_version: int | None = None) -> bool:
        with self.engine.begin() as conn:
            return tokens.mark_needs_reauth(conn, connector, subject, reason, _now(), expected_version)

    @contextmanager
    def refresh_lock(self, connector: str, subject: str, timeout_s: float) -> Iterator[None]:
        if not self.serialize_refresh:
            yield
            return
        if self.engine.dialect.name == "postgresql":
            with self.engine.begin() as conn:  # the lock lives as long as this transaction
                tokens.lock_for_refresh(conn, connector, subject, timeout_s)
                yield
            return
        key = (str(self.engine.url), connector, subject)
        with _process_guard:
            lock = _process_locks.setdefault(key, threading.Lock())
        if not lock.acquire(timeout=timeout_s):
            raise TimeoutError(f"another thread has been renewing the token of {connector} for {timeout_s:.0f}s")
        try:
            yield
        finally:
            lock.release()

    # -- for the CLI -----------------------------------------------------------------------------

    def status(self, connector: str | None = None) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return tokens.list_tokens(conn, connector)

    def delete(self, connector: str, subject: str | None = None) -> int:
        with self.engine.begin() as conn:
            return tokens.delete_tokens(conn, connector, subject)
