"""legacy_csv: CSV exports as CRMs write them, streamed; hostile files give per-row errors, never a crash.

The hostile export (Windows-1252 without a BOM, embedded newlines, duplicate ids, an empty required
value, dates in three formats, a 10 MB field, a file whose header lacks a required column) is also
migrated as a wave into SQLite and PostgreSQL: every bad row is listed with its reason, nothing of
it is half-written, and the run goes on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from connectors.legacy_csv import LegacyCsvConnector
from hub.app import Hub
from hub.config import parse_config
from hub.migrate.run import ReadProgress, StreamReport, WaveRunner, read_progress
from hub.registry import ConnectorFactory
from hub.sdk import FatalError
from state.db import make_engine
from state.schema import accounts, change_log, contacts, external_links, migration_items, migration_rejects

BIG = 10 * 1024 * 1024

COMPANIES = (
    "id,name,website,industry,region,owner,created_on,updated_on\r\n"
    "1,Société Générale,socgen.example.com,Banking,EMEA,u1,2019-03-01,2020-01-02T10:00:00\r\n"
    "2,\"Müller, Schmidt & Co\",mueller.example.com,\"Tools\r\nand dies\",EMEA,u2,01.03.2019,15.01.2020 09:30\r\n"
    "3,Ærø Café,aero.example.com,,EMEA,,03/04/2019 10:30 AM,03/05/2020 11:00 PM\r\n"
    "4,Duplicate One,dup.example.com,,EMEA,,2019-01-01,2020-01-01\r\n"
    "4,Duplicate Two,dup2.example.com,,EMEA,,2019-01-01,2020-01-01\r\n"
    "5,Bad Date,bad.example.com,,EMEA,,31/31/2019,2020-01-01\r\n"
    "6,,noname.example.com,,EMEA,,2019-01-01,2020-01-01\r\n"
    "7,Short Row,short.example.com\r\n"
    "8,Other Region,apac.example.com,,APAC,,2019-01-01,2020-01-01\r\n"
)


def people_csv(big: str) -> str:
    return (
        "id,company_id,first_name,last_name,email,phone,job_title,stage,created_on,updated_on\r\n"
        "10,1,Zoë,Dupont,zoe@socgen.example.com,+33 1 23 45 67 89,\"Head of \"\"Risk\"\"\",customer,2019-03-01,2020-01-02\r\n"
        f"11,2,Jürgen,Groß,juergen@mueller.example.com,,\"{big}\",customer,2019-03-01,2020-01-02\r\n"
        "12,2,Ana,Lima,ana@mueller.example.com,,Buyer,lead,2019-03-01,2020-01-02\r\n"
        "13,3,Bob,Smith,not-an-email,,,lead,2019-03-01,2020-01-02\r\n"
        "14,5,Carl,Orphan,carl@bad.example.com,,,lead,2019-03-01,2020-01-02\r\n"
        "15,8,Dee,Apac,dee@apac.example.com,,,lead,2019-03-01,2020-01-02\r\n"
    )


def write_export(folder: Path, *, big: int = BIG, deals_header: str = "id,company_id,title,amount") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    # Windows-1252, no BOM: what a spreadsheet's "CSV" export writes on a Western European PC
    (folder / "companies.csv").write_bytes(COMPANIES.encode("cp1252"))
    (folder / "people.csv").write_bytes(b"\xef\xbb\xbf" + people_csv("x" * big).encode("utf-8"))
    (folder / "deals.csv").write_text(f"{deals_header}\r\n1,1,Deal,100\r\n", encoding="utf-8")
    return folder


def _config(folder: Path, **extra: Any) -> dict[str, Any]:
    return {"kind": "legacy_csv", "path": str(folder), "page_size": 3, **extra, "streams": {
        "accounts": {"file": "companies.csv", "key": "id", "updated_at": "updated_on", "required": ["name"],
                     "dates": ["created_on"]},
        "contacts": {"file": "people.csv", "key": "id", "updated_at": "updated_on", "required": ["email"],
                     "dates": ["created_on"]},
        "opportunities": {"file": "deals.csv", "key": "id", "required": ["stage"]},
    }}


def _connector(folder: Path, **extra: Any) -> LegacyCsvConnector:
    cfg = parse_config({"connectors": {"files": _config(folder, **extra)}})
    c = ConnectorFactory(cfg).build("files")
    assert isinstance(c, LegacyCsvConnector)
    return c


def test_windows_1252_quotes_newlines_and_three_date_formats(tmp_path: Path) -> None:
    c = _connector(write_export(tmp_path / "x", big=10))
    pages = list(c.read("accounts", None))
    recs = {r.external_id: r.data for p in pages for r in p.records}
    assert recs["1"]["name"] == "Société Générale"  # cp1252 bytes, no BOM
    assert recs["2"]["name"] == "Müller, Schmidt & Co" and recs["2"]["industry"] == "Tools\r\nand dies"
    assert recs["3"]["name"] == "Ærø Café" and recs["3"]["industry"] is None  # empty string -> null
    assert recs["1"]["created_on"] == "2019-03-01"
    assert recs["2"]["created_on"] == "2019-03-01"  # 01.03.2019, day first
    assert recs["3"]["created_on"] == "2019-03-04T10:30:00+00:00"  # US with AM/PM: month first
    assert recs["2"]["updated_on"] == "2020-01-15T09:30:00+00:00"
    people = {r.external_id: r.data for p in c.read("contacts", None) for r in p.records}
    assert people["10"]["first_name"] == "Zoë" and people["10"]["job_title"] == 'Head of "Risk"'  # BOM skipped


def test_bad_rows_are_rejected_one_by_one_with_file_line_and_column(tmp_path: Path) -> None:
    c = _connector(write_export(tmp_path / "x", big=2_000_000))
    pages = list(c.read("accounts", None))
    reasons = {r.external_id: r.reason for p in pages for r in p.rejected}
    assert "column 'created_on'" in reasons["5"] and "31/31/2019" in reasons["5"] and "companies.csv line 8" in reasons["5"]
    assert "required column 'name' is empty" in reasons["6"]
    assert "3 fields where the header has 8" in reasons["7"]
    good = [r.external_id for p in pages for r in p.records]
    assert good == ["1", "2", "3", "4", "4", "8"]  # duplicates are the hub's call (first one wins there)
    people = list(c.read("contacts", None))
    big = {r.external_id: r.reason for p in people for r in p.rejected}
    assert "column 'job_title' holds 2,000,000 characters, over the limit of 1,000,000" in big["11"]
    assert [r.external_id for p in people for r in p.records] == ["10", "12", "13", "14", "15"]


def test_a_header_without_a_required_column_stops_the_stream_with_the_fix(tmp_path: Path) -> None:
    c = _connector(write_export(tmp_path / "x", big=10))
    with pytest.raises(FatalError, match=r"deals.csv has no column 'stage'.*Fix"):
        list(c.read("opportunities", None))


def test_resume_from_any_cursor_and_a_delta_after_the_end(tmp_path: Path) -> None:
    folder = write_export(tmp_path / "x", big=10)
    c = _connector(folder)
    pages = list(c.read("contacts", None))
    every = [r.external_id for p in pages for r in p.records]
    for i, p in enumerate(pages[:-1]):
        rest = [r.external_id for q in c.read("contacts", p.next_cursor) for r in q.records]
        assert [r.external_id for q in pages[: i + 1] for r in q.records] + rest == every
    end = pages[-1].next_cursor
    assert [r.external_id for p in c.read("contacts", end) for r in p.records] == []  # nothing newer
    text = (folder / "people.csv").read_text(encoding="utf-8-sig").replace(
        "12,2,Ana,Lima,ana@mueller.example.com,,Buyer,lead,2019-03-01,2020-01-02",
        "12,2,Ana,Lima,ana@mueller.example.com,,Director,lead,2019-03-01,2021-06-01")
    (folder / "people.csv").write_text(text, encoding="utf-8")
    assert [r.external_id for p in c.read("contacts", end) for r in p.records] == ["12"]


def test_progress_is_bytes_of_the_file_so_a_csv_stream_has_a_total(tmp_path: Path) -> None:
    from connectors.legacy_csv.sandbox import export

    export(tmp_path / "exp", 200)
    size = (tmp_path / "exp" / "people.csv").stat().st_size
    cfg = {"kind": "legacy_csv", "path": str(tmp_path / "exp"), "page_size": 100,
           "streams": {"contacts": {"file": "people.csv", "updated_at": "updated_on"}}}
    c = ConnectorFactory(parse_config({"connectors": {"exp": cfg}})).build("exp")
    pages = list(c.read("contacts", None))
    seen = [read_progress(c, "contacts", p.next_cursor, 0) for p in pages]
    assert {(x.total, x.unit) for x in seen} == {(size, "bytes")}  # known before the file is read through
    done = [x.done for x in seen]
    assert done == sorted(done) and 0 < done[0] < size and done[-1] == size
    # a resume's progress starts where the stopped read was, not at zero
    rest = list(c.read("contacts", pages[2].next_cursor))
    assert read_progress(c, "contacts", rest[0].next_cursor, 0).done > done[2]
    # a cursor stored before it carried a position: no total, as for a source that cannot tell
    assert read_progress(c, "contacts", {"row": 100, "hwm": None, "since": None}, 100) == \
        ReadProgress(100, None, "rows")


# -- the hostile export as a wave -------------------------------------------------------------------


@pytest.fixture
def csv_hub(db_url: str, tmp_path: Path) -> Iterator[Hub]:
    folder = write_export(tmp_path / "export")
    cfg = {"database": db_url, "connectors": {"files": _config(folder, page_size=1000)},
           "waves": {"emea": {"source": "files", "root": "accounts", "where": "region = 'EMEA'"}}}
    path = tmp_path / "crmhub.yaml"
    path.write_text(json.dumps(cfg))
    h = Hub.from_path(str(path)).ready()
    yield h
    h.close()


def test_a_hostile_export_migrates_what_it_can_and_lists_every_bad_row(csv_hub: Hub) -> None:
    rep = WaveRunner(csv_hub, "emea").run()
    by = {s.stream: s for s in rep.streams}
    assert by["accounts"].status == "ok" and by["contacts"].status == "ok"
    assert by["opportunities"].status == "failed" and "deals.csv has no column 'stage'" in str(by["opportunities"].error)
    assert rep.status == "partial"  # the run went on past the broken file, and says so
    eng = make_engine(str(csv_hub.db.url.render_as_string(hide_password=False)))
    with eng.connect() as c:
        rejects = {(r.stream, r.legacy_id): r.reason for r in c.execute(select(migration_rejects))}
        items = {(r.stream, r.legacy_id): r.entity_id for r in c.execute(select(migration_items))}
        names = set(c.execute(select(accounts.c.name)).scalars())
        emails = set(c.execute(select(contacts.c.email)).scalars())
        n_links = c.execute(select(func.count()).select_from(external_links)).scalar_one()
        n_changes = c.execute(select(func.count()).select_from(change_log)).scalar_one()
    eng.dispose()
    assert "duplicate id '4'" in rejects[("accounts", "4")]
    assert "31/31/2019" in rejects[("accounts", "5")]
    assert "required column 'name' is empty" in rejects[("accounts", "6")]
    assert "3 fields where the header has 8" in rejects[("accounts", "7")]
    assert "over the limit" in rejects[("contacts", "11")]
    assert "not an email address" in rejects[("contacts", "13")]
    # good rows are in; the first of the duplicates won; the APAC company is not this wave's
    assert names == {"Société Générale", "Müller, Schmidt & Co", "Ærø Café", "Duplicate One"}
    assert emails == {"zoe@socgen.example.com", "ana@mueller.example.com"}
    assert set(items) == {("accounts", "1"), ("accounts", "2"), ("accounts", "3"), ("accounts", "4"),
                          ("contacts", "10"), ("contacts", "12")}
    # nothing half-written: a rejected row has no entity, no link; contact 14 followed a rejected account
    assert n_links == len(items)
    # a second run (after fixing nothing) writes nothing new and reports the same rejects
    again = WaveRunner(csv_hub, "emea").run()
    assert again.total("created") == 0 and again.total("updated") == 0
    eng = make_engine(str(csv_hub.db.url.render_as_string(hide_password=False)))
    with eng.connect() as c:
        assert c.execute(select(func.count()).select_from(change_log)).scalar_one() == n_changes
    eng.dispose()


def test_the_sandbox_export_reads_back_row_for_row(tmp_path: Path) -> None:
    from connectors.legacy_csv.sandbox import export

    counts = export(tmp_path / "exp", 30, encoding="cp1252")
    assert counts == {"companies": 30, "people": 90, "deals": 30}
    cfg = {"kind": "legacy_csv", "path": str(tmp_path / "exp"), "streams": {
        "accounts": {"file": "companies.csv", "updated_at": "updated_on", "dates": ["created_on"]},
        "contacts": {"file": "people.csv", "updated_at": "updated_on", "dates": ["created_on"]}}}
    c = ConnectorFactory(parse_config({"connectors": {"exp": cfg}})).build("exp")
    accts = [r for p in c.read("accounts", None) for r in p.records]
    assert [r.external_id for r in accts] == [str(i) for i in range(1, 31)]
    assert accts[0].data["created_on"] == "2019-01-01" and accts[0].data["fax"] is None
    assert accts[0].updated_at == "2019-01-01T09:01:00+00:00"
    assert sum(len(p.records) for p in c.read("contacts", None)) == 90


def test_a_csv_wave_reports_progress_with_a_total(csv_hub: Hub, tmp_path: Path) -> None:
    seen: list[tuple[str, ReadProgress]] = []

    def on_page(rep: StreamReport, at: ReadProgress) -> None:
        seen.append((rep.stream, at))

    WaveRunner(csv_hub, "emea", progress=on_page).run(dry_run=True)
    sizes = {"accounts": "companies.csv", "contacts": "people.csv"}  # deals.csv stops at its header
    for stream, file in sizes.items():
        size = (tmp_path / "export" / file).stat().st_size
        assert [at for s, at in seen if s == stream][-1] == ReadProgress(size, size, "bytes")
