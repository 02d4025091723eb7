"""A folder of CSV exports as a source: one file per object, streamed, never loaded whole.

    connectors:
      legacy_files:
        kind: legacy_csv
        path: ./exports                     # relative to the working directory, or absolute
        streams:
          accounts: {file: companies.csv, key: id, updated_at: updated_on, dates: [created_on, updated_on]}
          contacts: {file: people.csv, key: id, required: [email]}

Cursor (opaque to the engine): `{"row": <data rows consumed>, "hwm": <newest updated_at seen>,
"since": <only rows changed after this, or None>, "at": <bytes of the file read so far>}`. A
resume skips the rows already consumed (parsing them again, not handing them on). When a file
has been read to its end the cursor becomes `{"row": 0, "since": <hwm>, "at": <the file's size>}`:
the next read (a delta, over a fresh export in the same place) hands on only rows whose
`updated_at` is newer, or every row when the stream has no `updated_at` column (the writer then
changes only what differs). `at` is only a measure of progress (`read_position`): a read never
seeks by it, since the text layer reads ahead of the last row.

A row that cannot be used (too few fields, an empty key or required value, a date in no known
format, an oversized field) is a `RejectedRecord` naming the file, line and column; the page
and the run go on. A header without the key or a required column stops that stream with a
`FatalError` saying which column and how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors.legacy_csv.reading import (
    DEFAULT_DATE_FORMATS,
    ByteOffset,
    CsvRow,
    DateParser,
    HeaderError,
    rows,
)
from hub.sdk import (
    Connector,
    ConnectorConfig,
    ConnectorContext,
    Cursor,
    CursorKind,
    FatalError,
    Page,
    RawRecord,
    RejectedRecord,
    StreamSpec,
)

__all__ = ["CsvStream", "LegacyCsvConfig", "LegacyCsvConnector"]

TARGETS = {"accounts": "account", "companies": "account", "contacts": "contact", "people": "contact",
           "leads": "lead", "opportunities": "opportunity", "deals": "opportunity", "activities": "activity"}


class CsvStream(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str
    key: str = "id"
    updated_at: str | None = None
    target: str | None = None
    #: columns every row must fill (an empty one rejects the row)
    required: list[str] = Field(default_factory=list)
    #: columns holding dates or date-times, normalised to ISO-8601 (the updated_at column always is)
    dates: list[str] = Field(default_factory=list)


class LegacyCsvConfig(ConnectorConfig):
    path: str = Field(description="the folder holding the CSV exports")
    streams: dict[str, CsvStream]  # type: ignore[assignment]
    encoding: str = "auto"
    delimiter: str = ","
    date_formats: list[str] = Field(default_factory=lambda: list(DEFAULT_DATE_FORMATS))
    timezone: str = "UTC"
    null_values: list[str] = Field(default_factory=lambda: [""])
    max_field_chars: int = Field(1_000_000, ge=1)
    page_size: int = Field(1000, ge=1, le=10_000)

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        if v != "auto":
            import codecs
            try:
                codecs.lookup(v)
            except LookupError:
                raise ValueError(f"unknown encoding {v!r}. Fix: use auto, utf-8, utf-8-sig or cp1252") from None
        return v

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, v: str) -> str:
        if len(v) != 1:
            raise ValueError(f"the delimiter must be one character (got {v!r}). Fix: write `delimiter: \";\"`")
        return v

    @field_validator("streams")
    @classmethod
    def _targets(cls, v: dict[str, CsvStream]) -> dict[str, CsvStream]:
        for name, s in v.items():
            if s.target is None and name not in TARGETS:
                raise ValueError(f"stream {name!r} has no `target:` and its name does not imply one. "
                                 "Fix: add `target: account|contact|lead|opportunity|activity` to it")
        return v


class LegacyCsvConnector(Connector):
    kind: ClassVar[str] = "legacy_csv"
    Config: ClassVar[type[ConnectorConfig]] = LegacyCsvConfig

    def __init__(self, config: ConnectorConfig, context: ConnectorContext):
        super().__init__(config, context)
        assert isinstance(config, LegacyCsvConfig)
        self.cfg = config
        self.parse_date = DateParser(config.date_formats, ZoneInfo(config.timezone))

    def streams(self) -> list[StreamSpec]:
        return [StreamSpec(name=n, target=s.target or TARGETS[n], primary_key=s.key, cursor_kind=CursorKind.KEY)
                for n, s in self.cfg.streams.items()]

    def _file(self, spec: CsvStream) -> Path:
        p = Path(self.cfg.path) / spec.file
        if not p.is_file():
            raise FatalError(f"{self.name}: {p} does not exist. Fix: put the export there, or correct "
                             f"`path:`/`file:` in crmhub.yaml")
        return p

    def check(self) -> str:
        return "; ".join(f"{n}: {self._file(s)}" for n, s in self.cfg.streams.items())

    def read(self, stream: str, cursor: Cursor | None) -> Iterator[Page]:
        if stream not in self.cfg.streams:
            raise FatalError(f"{self.name} has no stream {stream!r} (it has: {', '.join(self.cfg.streams)})")
        spec = self.cfg.streams[stream]
        path = self._file(spec)
        cur: dict[str, Any] = dict(cursor) if cursor else {"row": 0, "hwm": None, "since": None}
        consumed = int(cur.get("row") or 0)
        hwm: str | None = cur.get("hwm")
        since: str | None = cur.get("since")
        dates = list(dict.fromkeys([*spec.dates, *([spec.updated_at] if spec.updated_at else [])]))
        records: list[RawRecord] = []
        rejected: list[RejectedRecord] = []
        offset = ByteOffset()
        try:
            for row in rows(path, key=spec.key, encoding=self.cfg.encoding, delimiter=self.cfg.delimiter,
                            required=spec.required, dates=dates, parse_date=self.parse_date,
                            null_values=self.cfg.null_values, max_field_chars=self.cfg.max_field_chars,
                            skip=consumed, offset=offset):
                consumed += 1
                rec = self._record(spec, row, rejected)
                if rec is not None:
                    up = rec.updated_at
                    if up is not None and (hwm is None or up > hwm):
                        hwm = up
                    if since is None or up is None or up > since:
                        records.append(rec)
                if len(records) + len(rejected) >= self.cfg.page_size:
                    yield Page(records=records, rejected=rejected,
                               next_cursor={"row": consumed, "hwm": hwm, "since": since, "at": offset()})
                    records, rejected = [], []
        except HeaderError as e:
            raise FatalError(f"{self.name}.{stream}: {e}") from None
        except UnicodeDecodeError as e:
            raise FatalError(f"{self.name}.{stream}: {path.name} is not {self.cfg.encoding} ({e.reason} at byte "
                             f"{e.start}). Fix: set `encoding: auto` (UTF-8 or Windows-1252) or the file's "
                             "encoding") from None
        # read to the end: the next read is a delta from the newest change seen
        yield Page(records=records, rejected=rejected,
                   next_cursor={"row": 0, "hwm": hwm, "since": hwm, "at": offset()})

    def read_position(self, stream: str, cursor: Cursor | None) -> tuple[int, int] | None:
        """(bytes read, file size) of the read that left `cursor`: a progress bar's total and ETA
        for a source whose rows cannot be counted without reading the whole file."""
        spec = self.cfg.streams.get(stream)
        at = cursor.get("at") if cursor else None
        if spec is None or not isinstance(at, int):
            return None  # a cursor written before `at` existed; the next page's has it
        try:
            size = (Path(self.cfg.path) / spec.file).stat().st_size
        except OSError:
            return None
        return min(at, size), size

    def _record(self, spec: CsvStream, row: CsvRow, rejected: list[RejectedRecord]) -> RawRecord | None:
        if row.values is None:
            rejected.append(RejectedRecord(external_id=row.key, payload={"line": row.line},
                                           reason=row.error or "unusable row"))
            return None
        assert row.key is not None
        data: dict[str, Any] = row.values
        up = data.get(spec.updated_at) if spec.updated_at else None
        if isinstance(up, str) and len(up) == 10:  # a date only: midnight UTC
            up = f"{up}T00:00:00+00:00"
        data["_line"] = row.line
        return RawRecord(external_id=row.key, updated_at=up, data=data)
