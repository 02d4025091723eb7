"""Config: the documented shape works as written; every mistake names the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.config import ConfigError, load_config, parse_config
from hub.registry import ConnectorFactory

DOC_EXAMPLE = """\
database: postgresql+psycopg://postgres@127.0.0.1:5432/crm   # default: a local SQLite file
connectors:
  hubspot_main:
    kind: hubspot
    enabled: true
    base_url: https://api.hubapi.com
    auth: {token: "${HUBSPOT_TOKEN}"}
    streams: [contacts, companies, deals]
"""


def test_documented_shape_works_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBSPOT_TOKEN", "pat-na1-secret")
    monkeypatch.delenv("CRMHUB_DATABASE_URL", raising=False)
    p = tmp_path / "crmhub.yaml"
    p.write_text(DOC_EXAMPLE)
    cfg = load_config(p)
    assert cfg.database.startswith("postgresql+psycopg://")
    conf = ConnectorFactory(cfg).configs["hubspot_main"]
    assert conf.auth.token.get_secret_value() == "pat-na1-secret"
    assert "pat-na1-secret" not in repr(conf)


def test_database_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMHUB_DATABASE_URL", "sqlite:///x.db")
    assert parse_config({}).database == "sqlite:///x.db"


def test_unset_env_var_names_key_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUBSPOT_TOKEN", raising=False)
    with pytest.raises(ConfigError) as exc:
        parse_config({"connectors": {"hubspot_main": {"kind": "hubspot", "auth": {"token": "${HUBSPOT_TOKEN}"}}}})
    (problem,) = exc.value.problems
    assert problem.startswith("connectors.hubspot_main.auth.token: refers to ${HUBSPOT_TOKEN}, which is not set")
    assert "export HUBSPOT_TOKEN=" in problem


def test_all_problems_reported_at_once_with_fixes() -> None:
    cfg = parse_config({"connectors": {
        "a": {"kind": "hubsopt"},
        "b": {"kind": "hubspot", "auth": {"token": "t"}, "streams": ["contacts", "tickets"], "base_ulr": "x"},
        "c": {"kind": "hubspot"},
    }})
    with pytest.raises(ConfigError) as exc:
        ConnectorFactory(cfg)
    text = "\n".join(exc.value.problems)
    assert "connectors.a.kind: unknown connector kind 'hubsopt'. Fix: did you mean `kind: hubspot`? installed kinds: " in text
    assert "connectors.b.base_ulr: not allowed here. Fix: remove it, or check its spelling" in text
    assert "connectors.c: invalid. Fix: needs `auth: {token: ...}` (a private app) or `oauth: {...}`" in text


def test_unknown_stream_is_named() -> None:
    cfg = parse_config({"connectors": {"b": {"kind": "hubspot", "auth": {"token": "t"}, "streams": ["tickets"]}}})
    with pytest.raises(ConfigError, match=r"connectors.b.streams: hubspot has no stream 'tickets'"):
        ConnectorFactory(cfg)


@pytest.mark.parametrize(("data", "fragment"), [
    ({"databse": "x"}, "databse: not allowed here"),
    ({"sync": {"retry_max_attempts": 0}}, "sync.retry_max_attempts: invalid (got 0)"),
    ({"connectors": {"Bad-Name": {"kind": "hubspot"}}}, "instance name 'Bad-Name' must be lowercase"),
    ([1, 2], "must be a mapping"),
])
def test_top_level_mistakes(data: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert fragment in str(exc.value)


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    p = tmp_path / "crmhub.yaml"
    p.write_text("connectors:\n  a: {kind: hubspot\n")
    with pytest.raises(ConfigError, match=r"\(yaml\) line \d+"):
        load_config(p)


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBSPOT_TOKEN", "x")
    monkeypatch.delenv("CRMHUB_DATABASE_URL", raising=False)
    cfg = load_config(Path(__file__).parent.parent / "crmhub.example.yaml")
    factory = ConnectorFactory(cfg)  # every block validated by its connector's own Config
    assert factory.names() == ["hubspot_main"]
    assert len(factory.names(enabled_only=False)) == len(cfg.connectors)
