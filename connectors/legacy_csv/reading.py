"""Reading CSV exports as CRMs write them: streamed, whatever the encoding, dates or field sizes.

- Encoding `auto`: UTF-8, with or without a BOM; a byte sequence that is not UTF-8 is read as
  Windows-1252 (the other encoding spreadsheet exports use), byte run by byte run, so a file in
  Windows-1252 without a BOM reads correctly and never needs a whole-file guess.
- Quoted fields with embedded newlines, commas and doubled quotes (RFC 4180, the csv module).
- Empty strings are nulls (`null_values`).
- Dates in several formats are normalised to ISO-8601 (`dates`, `date_formats`).
- A field over `max_field_chars` rejects its row, not the file.
- `ByteOffset` tells how far into the file a reader is, so progress has a total without a row count.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

__all__ = ["DEFAULT_DATE_FORMATS", "ByteOffset", "CsvRow", "DateParser", "HeaderError", "open_text", "rows"]

#: tried in order after ISO-8601; a day-first and a month-first format cannot both be
#: listed usefully (03/04 is ambiguous), so the default is day-first with dots or slashes
#: and month-first only with a time of day, as US exports write it (`03/15/2024 10:30 AM`)
DEFAULT_DATE_FORMATS = ("%d.%m.%Y", "%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%d/%m/%Y", "%d/%m/%Y %H:%M",
                        "%d/%m/%Y %H:%M:%S", "%m/%d/%Y %I:%M %p", "%m/%d/%Y %I:%M:%S %p", "%Y/%m/%d",
                        "%d-%b-%Y", "%b %d, %Y")
#: the csv module's own cap; our per-row limit (`max_field_chars`) is checked below it
HARD_FIELD_LIMIT = 256 * 1024 * 1024


def _cp1252_fallback(err: UnicodeError) -> tuple[str, int]:
    assert isinstance(err, UnicodeDecodeError)
    bad = err.object[err.start:err.end]
    return bytes(bad).decode("cp1252", errors="replace"), err.end


codecs.register_error("crmhub_cp1252", _cp1252_fallback)


class HeaderError(ValueError):
    """A file whose header cannot serve the stream (a required or key column is missing)."""


def open_text(path: Path, encoding: str) -> io.TextIOWrapper[io.BufferedReader]:
    """A text stream over `path`: `auto` is UTF-8 (BOM skipped) with Windows-1252 for non-UTF-8 bytes."""
    raw = open(path, "rb")  # noqa: SIM115 - handed to the wrapper, which closes it
    if encoding == "auto":
        return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="crmhub_cp1252", newline="")
    return io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="")


class ByteOffset:
    """The bytes of its file a `rows()` reader has taken in: a measure of progress that needs no
    row count up front. It runs ahead of the last row handed on by at most the text layer's
    read-ahead (one 8 KiB chunk) and is the file's size once the file is read to its end. Ask it at
    page boundaries, not per row: each ask is a system call."""

    def __init__(self) -> None:
        self._binary: IO[bytes] | None = None
        self._at = 0

    def __call__(self) -> int:
        if self._binary is not None and not self._binary.closed:
            self._at = self._binary.tell()
        return self._at

    @contextmanager
    def following(self, binary: IO[bytes]) -> Iterator[None]:
        self._binary = binary
        try:
            yield
        finally:
            self()  # the last position outlives the file
            self._binary = None


class DateParser:
    """ISO-8601 first, then each format in turn; naive times are in `tz` (UTC by default)."""

    def __init__(self, formats: Sequence[str], tz: Any = UTC):
        self.formats = tuple(formats)
        self.tz = tz

    def __call__(self, s: str) -> str:
        s = s.strip()
        try:
            d = datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s)
            if len(s) == 10:
                return d.date().isoformat()
            return self._utc(d)
        except ValueError:
            pass
        for f in self.formats:
            try:
                d = datetime.strptime(s, f)
            except ValueError:
                continue
            if not any(c in f for c in ("%H", "%I", "%M")):
                return d.date().isoformat()
            return self._utc(d)
        raise ValueError(f"{s[:40]!r} matches no date format (ISO-8601, {', '.join(self.formats)})")

    def _utc(self, d: datetime) -> str:
        if d.tzinfo is None:
            d = d.replace(tzinfo=self.tz)
        return d.astimezone(UTC).isoformat()


@dataclass(slots=True)
class CsvRow:
    """One record: its values (or the reason it cannot be used) and the line it starts on."""

    line: int
    values: dict[str, Any] | None
    error: str | None = None
    key: str | None = None


def _short(v: Any, n: int = 120) -> Any:
    if isinstance(v, str) and len(v) > n:
        return f"{v[:n]}... ({len(v):,} characters)"
    return v


def rows(path: Path, *, key: str, encoding: str = "auto", delimiter: str = ",", required: Sequence[str] = (),
         dates: Sequence[str] = (), parse_date: DateParser | None = None, null_values: Sequence[str] = ("",),
         max_field_chars: int = 1_000_000, skip: int = 0,
         offset: ByteOffset | None = None) -> Iterator[CsvRow]:
    """Each data row of `path` after the first `skip` rows, parsed and checked; never the whole file.
    `offset`, when given, follows the reader's position in the file (bytes)."""
    csv.field_size_limit(HARD_FIELD_LIMIT)
    nulls = frozenset(null_values)
    parse = parse_date or DateParser(DEFAULT_DATE_FORMATS)
    with open_text(path, encoding) as f, (offset or ByteOffset()).following(f.buffer):
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            return
        missing = [c for c in (key, *required) if c not in header]
        if missing:
            raise HeaderError(f"{path.name} has no column {', '.join(map(repr, missing))} (header: "
                              f"{', '.join(header[:20])}). Fix: export it with that column, or correct the "
                              "stream's `key:`/`required:` in crmhub.yaml")
        date_cols = [c for c in dates if c in header]
        width = len(header)
        n = 0
        while True:
            line = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as e:  # e.g. a NUL byte; the reader goes on at the next line
                n += 1
                if n > skip:
                    yield CsvRow(line, None, f"{path.name} line {line}: unreadable CSV: {e}")
                continue
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # a blank line is no record
            n += 1
            if n <= skip:
                continue
            yield _check(path.name, line, header, width, cells, key, required, date_cols, parse, nulls,
                         max_field_chars)


def _check(file: str, line: int, header: list[str], width: int, cells: list[str], key: str,
           required: Sequence[str], date_cols: list[str], parse: DateParser, nulls: frozenset[str],
           max_field_chars: int) -> CsvRow:
    where = f"{file} line {line}"
    for i, c in enumerate(cells):
        if len(c) > max_field_chars:
            col = header[i] if i < width else f"#{i + 1}"
            return CsvRow(line, None, f"{where}: column {col!r} holds {len(c):,} characters, over the limit of "
                          f"{max_field_chars:,} (max_field_chars)", key=_short(cells[header.index(key)])
                          if header.index(key) < len(cells) else None)
    if len(cells) != width:
        k = cells[header.index(key)] if header.index(key) < len(cells) else None
        return CsvRow(line, None, f"{where}: {len(cells)} fields where the header has {width} (a missing or "
                      "extra separator, or an unclosed quote)", key=k)
    values: dict[str, Any] = {h: (None if v in nulls else v) for h, v in zip(header, cells, strict=True)}
    k = values.get(key)
    for c in required:
        if values.get(c) is None:
            return CsvRow(line, None, f"{where}: required column {c!r} is empty", key=k)
    if k is None:
        return CsvRow(line, None, f"{where}: the key column {key!r} is empty")
    for c in date_cols:
        v = values.get(c)
        if v is not None:
            try:
                values[c] = parse(v)
            except ValueError as e:
                return CsvRow(line, None, f"{where}: column {c!r}: {e}", key=k)
    values = {h: _short(v, max_field_chars) for h, v in values.items()}
    return CsvRow(line, values, None, key=str(k).strip())
