"""SOQL building: every place a value or name enters a query, with hostile input.

The built SOQL is parsed by the sandbox's SOQL parser (written from Salesforce's SOQL reference,
independently of the builder), so "cannot change the query" is checked as Salesforce would read it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.salesforce import soql
from connectors.salesforce.connector import SalesforceConfig, SalesforceConnector
from connectors.salesforce.sandbox_soql import SoqlSyntaxError, parse_query
from hub.sdk import ConnectorContext

HOSTILE = [
    "O'Brien",
    "\\",
    "x\\' OR Name != '",
    "' OR Id != null OR Name = '",
    "a\\\\' OR Name LIKE '%",
    "50%_off",
    'quote " and \\" both',
    "line\nbreak\r\ttab\b\f",
    "unicode \u00e9\u4e2d\U0001f600",
    "') OR (Name != '",
]
BASE = "https://acme.my.salesforce.com"


def _matches(q: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    parsed = parse_query(q)
    assert parsed.where is not None
    return [r for r in records if parsed.where(r)]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_quoted_value_matches_itself_and_nothing_else(value: str) -> None:
    q = soql.select(["Id"], "Contact", where=soql.eq("LastName", value))
    records: list[dict[str, Any]] = [{"Id": "1", "LastName": value}, {"Id": "2", "LastName": "Smith"}, {"Id": "3", "LastName": None},
               {"Id": "4", "LastName": value + "x"}]
    assert [r["Id"] for r in _matches(q, records)] == ["1"]
    assert parse_query(q).where_fields == {"LastName"}, "the value added a condition"


@pytest.mark.parametrize("value", HOSTILE)
def test_in_and_like_values_stay_values(value: str) -> None:
    q = soql.select(["Id"], "Contact", where=soql.and_(soql.in_("LastName", [value, "Lee"]),
                                                        soql.like("Email", value)))
    records = [{"Id": "1", "LastName": value, "Email": f"pre{value}post"},
               {"Id": "2", "LastName": "Lee", "Email": f"pre{value}post"},
               {"Id": "3", "LastName": "Other", "Email": value},
               {"Id": "4", "LastName": "Lee", "Email": value.replace("%", "X").replace("_", "Y")}]
    # a value's own % and _ match only themselves: record 4 matches only when it has none
    expected = ["1", "2"] + (["4"] if "%" not in value and "_" not in value else [])
    assert [r["Id"] for r in _matches(q, records)] == expected
    assert parse_query(q).where_fields == {"LastName", "Email"}


def test_like_escapes_the_values_own_wildcards() -> None:
    q = soql.select(["Id"], "Lead", where=soql.like("Company", "50%_off"))
    assert q.endswith("WHERE Company LIKE '%50\\%\\_off%'")
    records = [{"Id": "1", "Company": "Deal 50%_off now"}, {"Id": "2", "Company": "Deal 50 percent off"},
               {"Id": "3", "Company": "50XYoff"}]
    assert [r["Id"] for r in _matches(q, records)] == ["1"]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_round_trips_through_a_literal(value: str) -> None:
    if "\x00" in value:
        with pytest.raises(soql.SoqlError):
            soql.literal(value)
        return
    q = soql.select(["Id"], "Account", where=soql.eq("Name", value))
    hit = {"Id": "1", "Name": value}
    miss = {"Id": "2", "Name": value + "'"}
    assert _matches(q, [hit, miss]) == [hit]


def test_literals_of_every_type() -> None:
    assert soql.literal(None) == "null"
    assert soql.literal(True) == "true"
    assert soql.literal(42) == "42"
    assert soql.literal(Decimal("10.50")) == "10.50"
    assert soql.literal(date(2024, 6, 1)) == "2024-06-01"
    # datetimes are never quoted, always UTC with Z, to the second
    tz = timezone(timedelta(hours=2))
    assert soql.literal(datetime(2024, 6, 1, 14, 0, 5, 999, tzinfo=tz)) == "2024-06-01T12:00:05Z"
    with pytest.raises(soql.SoqlError, match="time zone"):
        soql.literal(datetime(2024, 6, 1))
    with pytest.raises(soql.SoqlError):
        soql.literal(float("nan"))
    with pytest.raises(soql.SoqlError, match="no SOQL literal"):
        soql.literal(object())
    assert soql.literal("it's") == "'it\\'s'"
    assert soql.literal("a\\b") == "'a\\\\b'"


@pytest.mark.parametrize("name", ["Name, (SELECT Id FROM Contacts)", "Name FROM User --", "Id'", "a b", "",
                                  "1Name", "Name)", "Account.Name'", "Foo__c WHERE Id != null"])
def test_names_are_checked_never_escaped(name: str) -> None:
    with pytest.raises(soql.SoqlError, match="not a Salesforce"):
        soql.field(name)
    with pytest.raises(soql.SoqlError):
        soql.select([name], "Contact")
    with pytest.raises(soql.SoqlError):
        soql.select(["Id"], name)
    with pytest.raises(soql.SoqlError):
        soql.select(["Id"], "Contact", order_by=[name])
    with pytest.raises(soql.SoqlError):
        soql.eq(name, "x")


def test_relationship_paths_and_custom_names_pass() -> None:
    assert soql.field("Account.Name") == "Account.Name"
    assert soql.sobject("ns__Invoice__c") == "ns__Invoice__c"
    assert soql.select(["Id", "Id", "Name"], "Foo__c", order_by=["SystemModstamp", "Id desc"], limit=5) == \
        "SELECT Id, Name FROM Foo__c ORDER BY SystemModstamp, Id DESC LIMIT 5"
    with pytest.raises(soql.SoqlError):
        soql.select(["Id"], "Foo__c", order_by=["Id; DROP"])
    with pytest.raises(soql.SoqlError):
        soql.select(["Id"], "Foo__c", limit=0)
    with pytest.raises(soql.SoqlError):
        soql.eq("Id", "x", "= 'a' OR Id")


def test_the_sandbox_parser_refuses_what_salesforce_refuses() -> None:
    """The parser the tests trust is strict: a broken escape or mixed AND/OR is an error."""
    with pytest.raises(SoqlSyntaxError, match="Illegal character sequence"):
        parse_query("SELECT Id FROM Contact WHERE Name = 'a\\qb'")
    with pytest.raises(SoqlSyntaxError):
        parse_query("SELECT Id FROM Contact WHERE Name = 'a' AND Id = 'b' OR Id = 'c'")
    with pytest.raises(SoqlSyntaxError):
        parse_query("SELECT Id FROM Contact WHERE Name = 'unterminated")


# -- the connector's own queries ------------------------------------------------------------------

def _connector(**config: Any) -> SalesforceConnector:
    cfg = SalesforceConfig.model_validate({"kind": "salesforce",
                                           "auth": {"access_token": "tok", "instance_url": BASE}, **config})
    return SalesforceConnector(cfg, ConnectorContext(name="sf", sleep=lambda _s: None),
                               clock=lambda: datetime(2026, 1, 5, 12, tzinfo=UTC))


@pytest.mark.parametrize("hostile_id", HOSTILE)
def test_a_hostile_cursor_id_cannot_change_the_keyset_query(hostile_id: str) -> None:
    """The cursor comes back from the database: even a tampered one stays a value."""
    conn = _connector()
    seen: list[str] = []
    with respx.mock(assert_all_called=True) as mock:
        def answer(request: httpx.Request) -> httpx.Response:
            seen.append(request.url.params["q"])
            return httpx.Response(200, json={"totalSize": 0, "done": True, "records": []})
        mock.get(f"{BASE}/services/data/v62.0/query").mock(side_effect=answer)
        list(conn.read("Contact", {"ts": "2026-01-05T09:00:00.000+0000", "id": hostile_id, "deleted_since": None}))
    parsed = parse_query(seen[0])
    assert parsed.where_fields == {"SystemModstamp", "Id"}
    assert parsed.where is not None
    at = "2026-01-05T09:00:00.000+0000"
    assert parsed.where({"SystemModstamp": at, "Id": hostile_id + "\U0010ffff"})
    assert not parsed.where({"SystemModstamp": at, "Id": hostile_id})
    assert not parsed.where({"SystemModstamp": "2026-01-05T08:59:59.000+0000", "Id": "~"})


@pytest.mark.parametrize("cursor", [
    {"ts": "2026-01-05T09:00:00Z' OR Id != null OR Id = '", "id": "003"},
    {"ts": "2026-01-05T09:00:00.000+0000", "id": None},
    {"ts": None, "id": None, "deleted_since": "yesterday&end=2099-01-01"},
])
def test_a_tampered_cursor_is_a_recorded_resync_never_part_of_a_query(cursor: dict[str, Any]) -> None:
    from hub.sdk import CursorExpired
    with respx.mock(assert_all_called=False) as mock:
        route = mock.route()
        with pytest.raises(CursorExpired, match="stored cursor cannot be used"):
            list(_connector().read("Contact", cursor))
        assert not route.called, "nothing was sent"


def test_config_names_are_checked_when_the_config_loads() -> None:
    from pydantic import ValidationError
    for bad in ({"custom_objects": ["Foo__c FROM User"]}, {"custom_objects": ["Plain"]},
                {"fields": {"Contact": ["Email, Password__c FROM User"]}},
                {"external_id_fields": {"Contact": "Ext__c' OR"}}, {"api_version": "62; DROP"}):
        with pytest.raises(ValidationError):
            _connector(**bad)


def test_mapping_paths_that_are_not_names_are_not_asked_for() -> None:
    conn = _connector()
    conn.context.field_hints = {"Contact": ["Email", "attributes.type", "Account.Name", "Bad Name", "X[0].y"]}
    fields = conn.fields("Contact")
    assert "Account.Name" in fields and "Email" in fields
    assert not {"attributes.type", "Bad Name", "X"} & set(fields)
