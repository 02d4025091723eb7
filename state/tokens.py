"""Repository for `hub.oauth_tokens`: encrypted token blobs, rotated by compare-and-set on `version`.

The blob is opaque here (the hub encrypts it before it reaches this module). `version` counts the
writes of a row: a refresh writes only if the row is still at the version it refreshed from
(`compare_and_set`), so of two workers refreshing at once exactly one wins and the other re-reads.
`version` 0 stands for "no row yet" in `compare_and_set`.

Callers own the transaction, as everywhere in `state`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from state.schema import oauth_tokens

__all__ = [
    "compare_and_set",
    "delete_tokens",
    "get_token",
    "list_tokens",
    "lock_for_refresh",
    "mark_needs_reauth",
    "put_token",
]

_T = oauth_tokens.c
#: first key of the two-key advisory lock space, so these locks never meet single-key ones ("OAUT")
_LOCK_CLASS = 0x4F415554
_STATUS_COLS = (_T.connector, _T.subject, _T.expires_at, _T.updated_at, _T.version, _T.needs_reauth,
                _T.reauth_reason)


def _insert(conn: Connection) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(oauth_tokens)


def _key(connector: str, subject: str) -> Any:
    return and_(_T.connector == connector, _T.subject == subject)


def get_token(conn: Connection, connector: str, subject: str) -> dict[str, Any] | None:
    """The row (blob included), or None."""
    row = conn.execute(select(oauth_tokens).where(_key(connector, subject))).mappings().first()
    return dict(row) if row else None


def put_token(conn: Connection, connector: str, subject: str, blob: str, expires_at: datetime | None,
              now: datetime) -> int:
    """Write a token whatever is stored (a fresh login) and clear any needs-reauth mark; the new version."""
    stmt: Any = _insert(conn).values(connector=connector, subject=subject, token_encrypted=blob, expires_at=expires_at,
                           updated_at=now, version=1, needs_reauth=False, reauth_reason=None)
    stmt = stmt.on_conflict_do_update(
        index_elements=[_T.connector, _T.subject],
        set_={"token_encrypted": blob, "expires_at": expires_at, "updated_at": now,
              "version": oauth_tokens.c.version + 1, "needs_reauth": False, "reauth_reason": None},
    ).returning(_T.version)
    return int(conn.execute(stmt).scalar_one())


def compare_and_set(conn: Connection, connector: str, subject: str, expected_version: int, blob: str,
                    expires_at: datetime | None, now: datetime) -> int | None:
    """Store a refreshed token only if the row is still at `expected_version` (0: only if there is no
    token yet). Returns the new version, or None when another writer got there first.

    A successful refresh also clears a needs-reauth mark: the grant evidently works.
    """
    stmt: Any = (
        update(oauth_tokens)
        .where(_key(connector, subject), _T.version == expected_version)
        .values(token_encrypted=blob, expires_at=expires_at, updated_at=now, version=_T.version + 1,
                needs_reauth=False, reauth_reason=None)
    )
    if conn.execute(stmt).rowcount == 1:
        return expected_version + 1
    if expected_version != 0:
        return None
    ins = _insert(conn)
    stmt = ins.values(connector=connector, subject=subject, token_encrypted=blob, expires_at=expires_at,
                      updated_at=now, version=1, needs_reauth=False).on_conflict_do_nothing()
    # RETURNING, not rowcount: with insertmanyvalues PostgreSQL's rowcount is not reliable here
    return 1 if conn.execute(stmt.returning(_T.version)).first() is not None else None


def mark_needs_reauth(conn: Connection, connector: str, subject: str, reason: str, now: datetime,
                      expected_version: int | None = None) -> bool:
    """Flag a token as needing a person to log in again (`crmhub status` shows it).

    With `expected_version`, only if no one stored a newer token meanwhile (then False). The version
    is not bumped: a refresh that was already under way and succeeds still clears the mark.
    Without a row (a grant that never produced a token), a row without a token is created.
    """
    cond = [_key(connector, subject)]
    if expected_version is not None:
        cond.append(_T.version == expected_version)
    done = conn.execute(update(oauth_tokens).where(*cond)
                        .values(needs_reauth=True, reauth_reason=reason, updated_at=now)).rowcount == 1
    if done or expected_version not in (None, 0):
        return done
    ins = _insert(conn)
    return conn.execute(ins.values(connector=connector, subject=subject, token_encrypted=None, updated_at=now,
                                   version=0, needs_reauth=True, reauth_reason=reason)
                        .on_conflict_do_nothing().returning(_T.version)).first() is not None


def list_tokens(conn: Connection, connector: str | None = None) -> list[dict[str, Any]]:
    """Every token's state for `crmhub status`, without the blob."""
    q = select(*_STATUS_COLS).order_by(_T.connector, _T.subject)
    if connector is not None:
        q = q.where(_T.connector == connector)
    return [dict(r) for r in conn.execute(q).mappings()]


def delete_tokens(conn: Connection, connector: str, subject: str | None = None) -> int:
    cond = [_T.connector == connector] + ([_T.subject == subject] if subject is not None else [])
    return int(conn.execute(delete(oauth_tokens).where(*cond)).rowcount)


def lock_for_refresh(conn: Connection, connector: str, subject: str, timeout_s: float) -> bool:
    """PostgreSQL: take a transaction-scoped advisory lock that serialises refreshes of one token across
    workers (released at the end of `conn`'s transaction); True once held. False where the backend has
    none (SQLite, one worker: the caller serialises in-process). TimeoutError after `timeout_s`.
    """
    if conn.dialect.name != "postgresql":
        return False
    digest = hashlib.blake2b(f"{connector}\0{subject}".encode(), digest_size=4).digest()
    key = int.from_bytes(digest, "big", signed=True)
    conn.execute(text(f"SET LOCAL lock_timeout = '{max(1, int(timeout_s * 1000))}ms'"))
    try:
        conn.execute(select(func.pg_advisory_xact_lock(_LOCK_CLASS, key)))
    except Exception as exc:  # lock_timeout: 55P03
        if getattr(getattr(exc, "orig", None), "sqlstate", None) == "55P03":
            raise TimeoutError(f"another worker has been refreshing the token of {connector} "
                               f"for more than {timeout_s:.0f}s") from None
        raise
    return True

