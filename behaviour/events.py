"""Reading shopper events (CSV, JSONL, Parquet) into validated columns, with a reject for every bad line.

Columns: `time, type, user, session, item, query?, quantity?, price?` and an optional `id` (an idempotency key
the shop already has). Common export names are accepted as aliases (`event_time`, `event_type`, `user_id`,
`session_id`, `item_id`, `product_id`, `timestamp`); other columns are ignored and named once in the report.
Validation is columnar (pyarrow + numpy), so a CSV of a few hundred thousand lines reads in well under a second;
a bad line never stops the rest.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import time
from datetime import datetime, timezone
from collections.abc import Iterator
from typing import BinaryIO
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shoptag.core.errors import BadInput
from shoptag.core.files import input_file

EVENT_TYPES = ("view", "click", "cart", "purchase", "return", "search")
TYPE_CODE = {name: code for code, name in enumerate(EVENT_TYPES)}
COLUMNS = ("id", "time", "type", "user", "session", "item", "query", "quantity", "price")
ALIASES = {
    "event_id": "id", "event_time": "time", "timestamp": "time", "event_type": "type", "user_id": "user",
    "customer_id": "user", "session_id": "session", "item_id": "item", "product_id": "item",
}
REQUIRED = ("time", "type")
TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d")
BATCH_ROWS = 200_000
CSV_BLOCK = 16 << 20  # bytes read (and checked for unclosed quotes) at a time
FUTURE_SLACK_S = 86400  # clocks and time zones differ; more than a day ahead is an error


@dataclass
class EventBatch:
    """Validated events of one chunk of a file, as columns; `line` is the 1-based line (row) in the source."""

    line: np.ndarray  # int64
    time: np.ndarray  # int64 seconds since the epoch (UTC; naive times are taken as UTC)
    type: np.ndarray  # int8 code into EVENT_TYPES
    user: list[str | None]
    session: list[str | None]
    item: list[str | None]
    query: list[str | None]
    quantity: np.ndarray  # float64
    price: np.ndarray  # float64, NaN when absent
    key: list[str | None]  # the source's own event id, or None

    def __len__(self) -> int:
        return len(self.line)


@dataclass
class Reject:
    line: int
    item: str | None
    reason: str


@dataclass
class ReadReport:
    ignored_columns: list[str] = field(default_factory=list)
    # lines that are no record (wrong cell count, not JSON), by line number
    malformed: dict[int, Reject] = field(default_factory=dict)


def _canonical(names: list[str]) -> dict[str, str]:
    """Source column name → our column name; duplicates after aliasing are bad input."""
    mapping: dict[str, str] = {}
    for name in names:
        ours = ALIASES.get(name.strip().lower(), name.strip().lower())
        if ours in COLUMNS:
            if ours in mapping.values():
                raise BadInput(f"two columns mean {ours!r}: {name!r} and another")
            mapping[name] = ours
    missing = [c for c in REQUIRED if c not in mapping.values()]
    if missing:
        raise BadInput(f"events file has no {', '.join(missing)} column (columns: {', '.join(names)})")
    return mapping


def _strings(table: pa.Table, name: str) -> pa.ChunkedArray | None:
    return table.column(name).cast(pa.string()) if name in table.column_names else None


def _parse_times(col: pa.ChunkedArray) -> np.ndarray:
    """Epoch seconds per row, -1 where the text is no time: ISO 8601 (with a zone or naive = UTC) or epoch seconds."""
    text = pc.utf8_trim_whitespace(col)
    out = np.full(len(text), -1, dtype=np.int64)
    for whole in (pa.timestamp("s", tz="UTC"), pa.timestamp("s")):  # every cell with a zone, or every cell naive
        try:
            values = text.cast(whole).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        ok = ~np.isnat(values)
        out[ok] = values[ok].astype("datetime64[s]").astype(np.int64)
        return out
    for fmt in TIME_FORMATS:
        parsed = pc.strptime(text, format=fmt, unit="s", error_is_null=True).to_numpy(zero_copy_only=False)
        ok = (out < 0) & ~np.isnat(parsed)
        out[ok] = parsed[ok].astype("datetime64[s]").astype(np.int64)
    rest = np.flatnonzero(out < 0)
    if len(rest):
        raw = text.to_pylist()
        for i in rest:
            out[i] = _one_time(raw[i])
    return out


def _one_time(value: str | None) -> int:
    """One cell the vectorised parsers did not take: ISO 8601 with a zone offset, or epoch seconds (or ms)."""
    if not value:
        return -1
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        try:
            seconds = float(value)
        except ValueError:
            return -1
        return int(seconds / 1000 if seconds > 1e11 else seconds) if math.isfinite(seconds) else -1
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return int(stamp.timestamp())


def _numbers(col: pa.ChunkedArray | None, n: int, default: float) -> tuple[np.ndarray, np.ndarray]:
    """Float values and a bad-row mask (text that is not a number); empty cells take `default`."""
    if col is None:
        return np.full(n, default), np.zeros(n, dtype=bool)
    text = pc.utf8_trim_whitespace(col)
    empty = pc.fill_null(pc.equal(text, ""), True).to_numpy(zero_copy_only=False)
    values = np.full(n, default)
    bad = np.zeros(n, dtype=bool)
    raw = text.to_pylist()
    try:
        parsed = pc.cast(pc.if_else(pc.fill_null(pc.equal(text, ""), True), None, text), pa.float64())
        arr = parsed.to_numpy(zero_copy_only=False)
        values[~empty] = arr[~empty]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        for i in np.flatnonzero(~empty):
            try:
                values[i] = float(raw[i])
            except ValueError:
                bad[i] = True
    bad |= ~np.isfinite(values) & ~empty
    return values, bad


def _trimmed(col: pa.ChunkedArray | None, n: int) -> pa.ChunkedArray:
    """Text without surrounding blanks; null where the cell is empty or the column absent."""
    if col is None:
        return pa.chunked_array([pa.nulls(n, pa.string())])
    text = pc.utf8_trim_whitespace(col)
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def _reason(i: int, checks: list[tuple[np.ndarray, str]], type_text: str | None, item: str | None) -> str:
    """The first failed check of row i, worded for the rejects file."""
    for mask, name in checks:
        if mask[i]:
            if name == "type":
                return f"unknown event type {(type_text or '')[:40]!r} (one of {', '.join(EVENT_TYPES)})"
            if name == "unknown item":
                return f"unknown item {(item or '')[:80]!r} (not in the catalog)"
            return name
    raise AssertionError("row has no failed check")


def _mask(values: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def validate(table: pa.Table, lines: np.ndarray, known_items: set[str] | None) -> tuple[EventBatch, list[Reject]]:
    """Columns of one chunk → the good events and one reject per bad line (`lines`: each row's line number).
    Checks run on whole columns (pyarrow); only bad rows are looked at one by one, to word their reason, and only
    good rows become Python values."""
    n = table.num_rows
    times = _parse_times(_strings(table, "time"))
    type_text = pc.utf8_lower(_trimmed(_strings(table, "type"), n))
    types = pc.fill_null(pc.index_in(type_text, value_set=pa.array(EVENT_TYPES)), -1).to_numpy(
        zero_copy_only=False).astype(np.int8)
    items = _trimmed(_strings(table, "item"), n)
    queries = _trimmed(_strings(table, "query"), n)
    quantity, bad_qty = _numbers(_strings(table, "quantity"), n, 1.0)
    price, bad_price = _numbers(_strings(table, "price"), n, float("nan"))
    search = types == TYPE_CODE["search"]
    has_item, has_query = _mask(pc.is_valid(items)), _mask(pc.is_valid(queries))
    known = np.ones(n, dtype=bool) if known_items is None else _mask(
        pc.is_in(items, value_set=pa.array(list(known_items), pa.string())))
    blank = ~_mask(pc.is_valid(type_text)) & (times < 0) & ~has_item
    # a clock error in the future would make every real event look old to retention and to the time decay
    future = times > time.time() + FUTURE_SLACK_S
    checks = [
        (blank, "empty line"),
        (future, "time in the future (more than a day ahead of this machine's clock)"),
        (times < 0, "bad time (expected ISO 8601, e.g. 2024-05-01 12:30:00, or epoch seconds)"),
        (types < 0, "type"),
        (search & ~has_query, "search event without a query"),
        (~search & ~has_item, "event without an item"),
        (has_item & ~known, "unknown item"),
        (bad_qty, "quantity is not a number"),
        (bad_price, "price is not a number"),
    ]
    bad = np.logical_or.reduce([mask for mask, _ in checks])
    good = np.flatnonzero(~bad)
    keep = pa.array(~bad)

    def kept(values: pa.ChunkedArray) -> list:
        return values.filter(keep).to_pylist()

    batch = EventBatch(
        line=lines[good], time=times[good], type=types[good],
        user=kept(_trimmed(_strings(table, "user"), n)), session=kept(_trimmed(_strings(table, "session"), n)),
        item=kept(items), query=kept(queries), quantity=quantity[good], price=price[good],
        key=kept(_trimmed(_strings(table, "id"), n)),
    )
    wrong = np.flatnonzero(bad)
    wrong_types, wrong_items = type_text.take(wrong).to_pylist(), items.take(wrong).to_pylist()
    rejects = [Reject(int(lines[i]), item, _reason(i, checks, kind, item))
               for i, kind, item in zip(wrong.tolist(), wrong_types, wrong_items, strict=True)]
    return batch, rejects


def _renamed(table: pa.Table, report: ReadReport) -> pa.Table:
    mapping = _canonical(table.column_names)
    report.ignored_columns = sorted(c for c in table.column_names if c not in mapping)
    return table.select(list(mapping)).rename_columns([mapping[c] for c in mapping])


class _QuotedLines(io.RawIOBase):
    """The CSV's bytes, with every line whose quote is never closed blanked out (its line break kept) and
    recorded as a reject: a CSV parser would otherwise read on to the next quote, swallowing every line between
    as one cell. Values may not span lines here (as with `newlines_in_values=False`), so an odd number of
    quotes on a line that a strict CSV reader cannot finish is an unclosed quote; lines are checked in blocks
    with numpy, and only lines with an odd count one by one."""

    def __init__(self, raw: BinaryIO, malformed: dict[int, Reject]) -> None:
        self.raw, self.malformed, self.first_line = raw, malformed, 1
        self.pending, self.offset = memoryview(b""), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self.offset >= len(self.pending):
            block = self.raw.read(CSV_BLOCK)
            if not block:
                return 0
            self.pending, self.offset = memoryview(self._blank_unclosed(block + self.raw.readline())), 0
        n = min(len(buffer), len(self.pending) - self.offset)
        buffer[:n] = self.pending[self.offset:self.offset + n]
        self.offset += n
        return n

    def _blank_unclosed(self, block: bytes) -> bytes:
        data = np.frombuffer(block, dtype=np.uint8)
        breaks = np.flatnonzero(data == 10)
        bounds = np.concatenate([[-1], breaks, [len(data)]])
        quotes = np.diff(np.searchsorted(np.flatnonzero(data == 34), bounds))
        first, self.first_line = self.first_line, self.first_line + len(breaks)
        odd = np.flatnonzero(quotes % 2)
        if not len(odd):
            return block
        pieces, kept_from = [], 0
        for i in odd.tolist():
            start, end = int(bounds[i]) + 1, int(bounds[i + 1])
            try:
                next(csv.reader([block[start:end].decode("utf-8", errors="replace").rstrip("\r")], strict=True))
            except csv.Error:
                self.malformed[first + i] = Reject(first + i, None, 'unclosed quote (a " with no closing " on its '
                                                                    "line)")
                pieces.append(block[kept_from:start])
                kept_from = end  # the line's break stays: the lines after it keep their numbers
        pieces.append(block[kept_from:])
        return b"".join(pieces)


def _csv_chunks(path: Path, report: ReadReport) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """CSV (or .csv.gz) in blocks; rows with the wrong number of cells or an unclosed quote become rejects with
    their physical line."""
    malformed = report.malformed

    def invalid(row) -> str:
        malformed[row.number] = Reject(row.number, None, f"expected {row.expected_columns} cells, found "
                                                         f"{row.actual_columns}")
        return "skip"

    try:
        with (gzip.open if path.suffix.lower() == ".gz" else open)(path, "rb") as stream:  # the header alone
            header = stream.readline()
        names = pacsv.read_csv(pa.py_buffer(header)).column_names if header.strip() else []
        if not names:
            raise BadInput(f"{path}: no header line (expected columns such as time,type,user,session,item)")
        convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=False)
        parse = pacsv.ParseOptions(newlines_in_values=False, ignore_empty_lines=False, invalid_row_handler=invalid)
        unclosed: dict[int, Reject] = {}  # blanked lines: pyarrow reads them as empty rows, dropped here
        with (gzip.open if path.suffix.lower() == ".gz" else open)(path, "rb") as raw:
            # one thread: pyarrow knows the physical line of a malformed row only then
            reader = pacsv.open_csv(io.BufferedReader(_QuotedLines(raw, unclosed), CSV_BLOCK),
                                    read_options=pacsv.ReadOptions(block_size=CSV_BLOCK, use_threads=False),
                                    parse_options=parse, convert_options=convert)
            next_line = 2
            for record_batch in reader:
                table = pa.Table.from_batches([record_batch])
                lines = np.arange(next_line, next_line + table.num_rows, dtype=np.int64)
                for skipped in sorted(m for m in malformed if m >= next_line):  # rows pyarrow skipped take a line
                    lines[lines >= skipped] += 1
                next_line = int(lines[-1]) + 1 if len(lines) else next_line
                if unclosed:
                    keep = ~np.isin(lines, np.fromiter(unclosed, dtype=np.int64))
                    table, lines = table.filter(pa.array(keep)), lines[keep]
                yield _renamed(table, report), lines
        malformed.update(unclosed)
    except pa.ArrowInvalid as exc:
        raise BadInput(f"{path}: cannot read as CSV ({str(exc)[:200]})") from None


def _jsonl_chunks(path: Path, report: ReadReport) -> Iterator[tuple[pa.Table, np.ndarray]]:
    rows: list[dict] = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, text in enumerate(handle, 1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
                if not isinstance(record, dict):
                    raise ValueError("a line must be a JSON object")
            except (ValueError, RecursionError) as exc:
                report.malformed[number] = Reject(number, None, f"not a JSON object: {str(exc)[:120]}")
                continue
            record = {ALIASES.get(k.lower(), k.lower()): v for k, v in record.items()}
            record["_line"] = number
            rows.append(record)
            if len(rows) >= BATCH_ROWS:
                yield from _json_table(rows, report)
                rows = []
    if rows:
        yield from _json_table(rows, report)


def _json_table(rows: list[dict], report: ReadReport) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """JSON rows → one table with each row's line number."""
    ignored = sorted({k for r in rows for k in r} - set(COLUMNS) - {"_line"})
    report.ignored_columns = sorted(set(report.ignored_columns) | set(ignored))
    present = [c for c in COLUMNS if any(c in r for r in rows)]
    missing = [c for c in REQUIRED if c not in present]
    if missing:
        raise BadInput(f"events have no {', '.join(missing)} field")
    data = {c: [None if r.get(c) is None else str(r[c]) for r in rows] for c in present}
    yield (pa.table({c: pa.array(v, pa.string()) for c, v in data.items()}),
           np.array([r["_line"] for r in rows], dtype=np.int64))


def _parquet_chunks(path: Path, report: ReadReport) -> Iterator[tuple[pa.Table, np.ndarray]]:
    try:
        handle = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInput(f"{path}: cannot read as Parquet ({exc})") from None
    row = 1
    for record_batch in handle.iter_batches(batch_size=BATCH_ROWS):
        table = pa.Table.from_batches([record_batch])
        table = pa.table({n: table.column(n).cast(pa.string()) for n in table.column_names})
        yield _renamed(table, report), np.arange(row, row + table.num_rows, dtype=np.int64)
        row += table.num_rows


def read_events(path: Path, known_items: set[str] | None) -> tuple[Iterator[tuple[EventBatch, list[Reject]]], ReadReport]:
    """Stream a file's events in validated batches. `known_items` (the catalog's ids) makes unknown items rejects."""
    if not input_file(path, "events file").is_file():
        raise BadInput(f"{path}: not a file")
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    report = ReadReport()
    if suffix in (".csv", ".csv.gz", ".tsv"):
        chunks = _csv_chunks(path, report)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        chunks = _jsonl_chunks(path, report)
    elif suffix == ".parquet":
        chunks = _parquet_chunks(path, report)
    else:
        raise BadInput(f"{path}: unknown events format {suffix!r} (use .csv, .csv.gz, .jsonl or .parquet)")

    def batches() -> Iterator[tuple[EventBatch, list[Reject]]]:
        for table, lines in chunks:
            yield validate(table, lines, known_items)
        malformed = list(report.malformed.values())
        if malformed:
            empty = pa.table({"time": pa.array([], pa.string()), "type": pa.array([], pa.string())})
            yield validate(empty, np.empty(0, dtype=np.int64), known_items)[0], malformed

    return batches(), report
