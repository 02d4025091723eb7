"""The encrypted token store: AES-GCM under CRMHUB_SECRET_KEY, compare-and-set rotation, needs-reauth
marks; on SQLite and on real PostgreSQL."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from sqlalchemy import select, text

from hub.auth.crypto import ENV_VAR, SecretKeyError, TokenCipher, new_key
from hub.auth.store import DbTokenStore
from state.db import make_engine
from state.schema import oauth_tokens

ACCESS = "at-Zq81_secret_access_value_0123456789"
REFRESH = "rt-Yp72_secret_refresh_value_9876543210"


def _token(**extra: Any) -> dict[str, Any]:
    return {"access_token": ACCESS, "refresh_token": REFRESH, "token_type": "bearer", "expires_at": 2_000_000_000,
            "obtained_at": 1_999_998_200, **extra}


@pytest.fixture
def store(db_url: str) -> Any:
    engine = make_engine(db_url)
    yield DbTokenStore(engine, TokenCipher([os.urandom(32)]))
    engine.dispose()


# -- the cipher ------------------------------------------------------------------------------------

def test_cipher_round_trip_is_bound_to_its_row() -> None:
    cipher = TokenCipher.from_env({ENV_VAR: new_key()})
    blob = cipher.encrypt(b'{"access_token": "x"}', context="hubspot_main\0")
    assert blob.startswith("v1.") and "access_token" not in blob
    assert cipher.decrypt(blob, context="hubspot_main\0") == b'{"access_token": "x"}'
    with pytest.raises(SecretKeyError, match="integrity check"):
        cipher.decrypt(blob, context="other\0")  # copied onto another connector's row


def test_missing_key_names_the_variable_and_how_to_make_one() -> None:
    with pytest.raises(SecretKeyError) as exc:
        TokenCipher.from_env({})
    msg = str(exc.value)
    assert ENV_VAR in msg and "is not set" in msg
    assert "crmhub auth keygen" in msg and "export CRMHUB_SECRET_KEY" in msg


def test_malformed_key_is_named_but_never_echoed() -> None:
    bad = "not*base64*" + "q" * 30
    with pytest.raises(SecretKeyError) as exc:
        TokenCipher.from_env({ENV_VAR: bad})
    assert ENV_VAR in str(exc.value) and bad not in str(exc.value)
    short = base64.urlsafe_b64encode(b"16 bytes only!!!").decode()
    with pytest.raises(SecretKeyError, match="32 bytes"):
        TokenCipher.from_env({ENV_VAR: short})


def test_key_rotation_new_key_first_old_key_still_decrypts() -> None:
    old, new = new_key(), new_key()
    blob = TokenCipher.from_env({ENV_VAR: old}).encrypt(b"t", context="c")
    rotated = TokenCipher.from_env({ENV_VAR: f"{new},{old}"})
    assert rotated.decrypt(blob, context="c") == b"t"
    assert rotated.encrypt(b"t", context="c").split(".")[1] != blob.split(".")[1]  # new writes use the new key
    with pytest.raises(SecretKeyError, match="not in CRMHUB_SECRET_KEY"):
        TokenCipher.from_env({ENV_VAR: new}).decrypt(blob, context="c")


# -- the store on both backends ---------------------------------------------------------------------

def test_token_is_never_in_clear_in_the_database(store: DbTokenStore) -> None:
    store.save("hubspot_main", "", _token(instance_url="https://x.my.salesforce.com"))
    with store.engine.connect() as c:
        rows = c.execute(select(oauth_tokens)).mappings().all()
        if store.engine.dialect.name == "postgresql":  # the whole table as the server sees it
            dump = c.execute(text("SELECT t::text FROM hub.oauth_tokens t")).scalars().all()
        else:
            dump = [repr(tuple(r)) for r in c.exec_driver_sql("SELECT * FROM oauth_tokens").fetchall()]
    assert len(rows) == 1 and rows[0]["token_encrypted"].startswith("v1.")
    everything = " ".join(dump) + repr(rows)
    for secret in (ACCESS, REFRESH, ACCESS[3:20], REFRESH[3:20]):
        assert secret not in everything
    assert rows[0]["expires_at"] is not None  # in clear: for status, not a secret
    loaded = store.load("hubspot_main", "")
    assert loaded is not None and loaded.token["access_token"] == ACCESS and loaded.version == 1


def test_compare_and_set_one_winner(store: DbTokenStore) -> None:
    first = store.replace("sf", "", _token(), expected_version=0)  # 0: nothing stored yet
    assert first is not None and first.version == 1
    assert store.replace("sf", "", _token(), expected_version=0) is None  # a second "first" loses
    won = store.replace("sf", "", _token(access_token="at-new"), expected_version=1)
    lost = store.replace("sf", "", _token(access_token="at-stale"), expected_version=1)
    assert won is not None and won.version == 2 and lost is None
    current = store.load("sf", "")
    assert current is not None and current.token["access_token"] == "at-new" and current.version == 2


def test_needs_reauth_mark_is_conditional_and_cleared_by_login(store: DbTokenStore) -> None:
    store.save("hs", "", _token())
    assert not store.mark_needs_reauth("hs", "", "invalid_grant", expected_version=7)  # a newer token exists
    assert store.mark_needs_reauth("hs", "", "invalid_grant: revoked", expected_version=1)
    marked = store.load("hs", "")
    assert marked is not None and marked.needs_reauth and marked.reauth_reason == "invalid_grant: revoked"
    assert [(r["connector"], r["needs_reauth"]) for r in store.status()] == [("hs", True)]
    assert "token_encrypted" not in store.status()[0]
    again = store.save("hs", "", _token(access_token="at-after-login"))
    assert again.version == 2
    fresh = store.load("hs", "")
    assert fresh is not None and not fresh.needs_reauth and fresh.reauth_reason is None


def test_mark_without_a_token_then_first_token_clears_it(store: DbTokenStore) -> None:
    # an app-only grant that never got a token: the mark still shows in status
    assert store.mark_needs_reauth("graph", "", "invalid_client: bad secret", expected_version=0)
    row = store.load("graph", "")
    assert row is not None and row.needs_reauth and row.token == {} and row.version == 0
    stored = store.replace("graph", "", _token(), expected_version=0)
    assert stored is not None and stored.version == 1
    after = store.load("graph", "")
    assert after is not None and not after.needs_reauth


def test_subjects_are_separate_tokens(store: DbTokenStore) -> None:
    store.save("gmail", "a@example.com", _token(access_token="at-a"))
    store.save("gmail", "b@example.com", _token(access_token="at-b"))
    a, b = store.load("gmail", "a@example.com"), store.load("gmail", "b@example.com")
    assert a is not None and b is not None and (a.token["access_token"], b.token["access_token"]) == ("at-a", "at-b")
    assert store.delete("gmail", "a@example.com") == 1 and store.load("gmail", "a@example.com") is None
    assert store.delete("gmail") == 1


def test_wrong_key_gives_a_clear_error_without_the_token(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        DbTokenStore(engine, TokenCipher([os.urandom(32)])).save("hs", "", _token())
        with pytest.raises(SecretKeyError) as exc:
            DbTokenStore(engine, TokenCipher([os.urandom(32)])).load("hs", "")
        assert "not in CRMHUB_SECRET_KEY" in str(exc.value) and ACCESS not in str(exc.value)
    finally:
        engine.dispose()


def test_key_is_read_lazily_and_missing_key_is_clear(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    engine = make_engine(db_url)
    try:
        store = DbTokenStore(engine)  # a hub without OAuth connectors never needs the key
        assert store.status() == []
        with pytest.raises(SecretKeyError, match="CRMHUB_SECRET_KEY is not set"):
            store.save("hs", "", _token())
    finally:
        engine.dispose()
