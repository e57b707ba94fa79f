"""Catalog readers, one per file format: JSONL, CSV/TSV and Parquet rows become records, then products or rejects.

Each reader yields (line, raw text, record dict or an `InvalidRecord`); `read_catalog` picks the reader from the
extension and hands the records to validation (`catalog.records`). Only an unreadable catalog *file* raises
`CatalogError`; a bad line or row becomes a reject and reading goes on.

Flat formats (CSV/TSV/Parquet) also accept:
  * `attributes` / `tags` cells holding a JSON object;
  * `attr.<name>` or `attr:<name>` columns: one attribute each;
  * `tags.<family>`, `tag.<family>`, `tags:<family>` or `tag:<family>` columns: values separated by `|`
    (Parquet may also use a list column);
  * an empty cell means "absent". Line numbers count the header as line 1 (CSV) or rows from 1 (Parquet).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq
from shoptag.core.errors import BadInput
from shoptag.core.files import input_file
from shoptag.core.settings import CatalogSettings

from .records import (
    RAW_CHARS, InvalidRecord, Parsed, Product, Reject, json_error, no_overlap, type_name, validated,
)

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
ATTR_PREFIXES = ("attr.", "attr:")
TAG_PREFIXES = ("tags.", "tag.", "tags:", "tag:")
TAG_SEPARATOR = "|"


class CatalogError(BadInput):
    """The catalog file as a whole cannot be read (missing, unreadable, unknown format, no id column)."""


def read_catalog(path: Path, settings: CatalogSettings, *, fmt: str | None = None) -> Iterator[Product | Reject]:
    """Stream products and rejects from `path`, in file order.

    The file is checked before this returns, so a missing or unreadable catalog raises `CatalogError`
    here rather than at the first `next()`. `fmt` (`jsonl`, `csv`, `tsv`, `parquet`) overrides the extension.
    """
    path = Path(path)
    kind = _format_of(path, fmt)
    _check_readable(path)
    if kind == "jsonl":
        records = _jsonl_records(path)
    elif kind == "parquet":
        _check_columns(path, _parquet_schema(path).names)
        records = _parquet_records(path)
    else:
        delimiter = "\t" if kind == "tsv" else ","
        _check_columns(path, _csv_header(path, delimiter))
        records = _csv_records(path, delimiter)
    return validated(records, path.parent.resolve(), settings)


# --- file formats: each yields (line, raw text, record dict or an InvalidRecord) -----------------------

def _format_of(path: Path, fmt: str | None) -> str:
    kind = fmt.lower().lstrip(".") if fmt else FORMATS.get(path.suffix.lower())
    if kind in ("json", "ndjson"):
        kind = "jsonl"
    if kind not in ("jsonl", "csv", "tsv", "parquet"):
        raise CatalogError(f"{path}: unknown catalog format {fmt or path.suffix!r}; use .jsonl, .csv, .tsv or .parquet")
    return kind


def _check_readable(path: Path) -> None:
    input_file(path, "catalog file")
    if not path.is_file():
        raise CatalogError(f"{path}: not a file")
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read catalog file ({exc.strerror or exc})") from exc


def _jsonl_records(path: Path) -> Iterator[Parsed]:
    """One JSON object per line; blank lines are skipped; lines are decoded one by one so bad bytes stay local."""
    with path.open("rb") as f:
        for number, data in enumerate(f, start=1):
            if number == 1:
                data = data.removeprefix(b"\xef\xbb\xbf")
            if not data.strip():
                continue
            try:
                raw = data.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                yield number, data[:RAW_CHARS].decode("utf-8", "replace"), InvalidRecord(
                    f"line is not valid UTF-8 (byte {exc.start}); save the catalog as UTF-8"
                )
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                yield number, raw, InvalidRecord(f"unparsable line: {json_error(exc)}")
                continue
            except RecursionError:
                yield number, raw[:RAW_CHARS], InvalidRecord("unparsable line: JSON nested too deeply")
                continue
            if not isinstance(record, dict):
                yield number, raw, InvalidRecord(f"not a JSON object (got {type_name(record)})")
                continue
            yield number, raw, record


def _csv_records(path: Path, delimiter: str) -> Iterator[Parsed]:
    """CSV/TSV rows as flat dicts; undecodable bytes are kept as surrogates and the row rejected."""
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        lines = _Lines(f)
        reader = csv.reader(lines, delimiter=delimiter)
        header = [name.strip() for name in next(reader)]
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                too_long = "field larger than field limit" in str(exc)  # most often a quote that is never closed
                yield start, "", InvalidRecord(
                    f"a field from line {start} runs past {csv.field_size_limit():,} characters, most often an "
                    f"unterminated quote; lines {start}-{reader.line_num} skipped" if too_long
                    else f"unparsable CSV row ({exc})"
                )
                continue
            if not any(cell.strip() for cell in row):
                continue
            raw = json.dumps(row, ensure_ascii=False)
            if lines.ended:  # the reader asked for a line past the end: it was inside a quoted field
                opened = max(start, reader.line_num - row[-1].count("\n") + row[-1].endswith("\n"))
                yield start, raw, InvalidRecord(
                    f"unterminated quote: the quoted field opened on line {opened} is never closed, so lines "
                    f"{opened}-{reader.line_num} were read as one field; close the quote"
                )
            elif not _is_utf8(raw):
                yield start, raw.encode("utf-8", "replace").decode(), InvalidRecord(
                    "row is not valid UTF-8; save the catalog as UTF-8"
                )
            elif len(row) != len(header):
                yield start, raw, InvalidRecord(f"unparsable CSV row: {len(row)} fields, the header has {len(header)}")
            else:
                yield start, raw, _unflatten(dict(zip(header, row)))


class _Lines:
    """A file's lines as `csv.reader` takes them, noting when it asks past the last one: the non-strict reader
    does that only inside a quoted field, then returns the rest of the file as that field."""

    def __init__(self, f: IO[str]) -> None:
        self._f = f
        self.ended = False

    def __iter__(self) -> Iterator[str]:
        yield from self._f
        self.ended = True


def _parquet_records(path: Path) -> Iterator[Parsed]:
    """Parquet rows in batches, so memory stays bounded by the batch, not the file."""
    with pq.ParquetFile(path) as parquet:
        schema = parquet.schema_arrow
        maps = {f.name for f in schema if pa.types.is_map(f.type)}
        pandas_index = [name for name in schema.names if name.startswith("__index_level_")]
        number = 0
        for batch in parquet.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                number += 1
                for name in maps:
                    if row[name] is not None:
                        row[name] = dict(row[name])
                for name in pandas_index:
                    del row[name]
                yield number, json.dumps(row, ensure_ascii=False, default=str), _unflatten(row)


def _csv_header(path: Path, delimiter: str) -> list[str]:
    """The header row, read before streaming so a file without an `id` column fails at once."""
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        try:
            return [name.strip() for name in next(csv.reader(f, delimiter=delimiter))]
        except StopIteration:
            raise CatalogError(f"{path}: empty file, no header row") from None
        except csv.Error as exc:
            raise CatalogError(f"{path}: unreadable header ({exc})") from exc


def _parquet_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise CatalogError(f"{path}: not a readable Parquet file ({exc})") from exc


def _check_columns(path: Path, names: list[str]) -> None:
    if "id" not in names:
        raise CatalogError(f"{path}: no `id` column (columns: {', '.join(names[:20])})")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise CatalogError(f"{path}: duplicate column(s) {', '.join(duplicated)}")


def _unflatten(row: dict[str, Any]) -> dict[str, Any] | InvalidRecord:
    """A flat row (CSV/Parquet) as a record: JSON cells decoded, `attr.*` and `tags.*` columns gathered."""
    record: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    tags: dict[str, Any] = {}
    for name, value in row.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if name in ("attributes", "tags") and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                return InvalidRecord(f"{name}: cell is not valid JSON ({exc.msg})")
            except RecursionError:
                return InvalidRecord(f"{name}: cell is JSON nested too deeply")
        attribute, family = _after_prefix(name, ATTR_PREFIXES), _after_prefix(name, TAG_PREFIXES)
        if attribute:
            attributes[attribute] = value
        elif family:
            tags[family] = value.split(TAG_SEPARATOR) if isinstance(value, str) else value
        else:
            record[name] = value
    if attributes:
        record["attributes"] = _merge(record.get("attributes"), attributes, "attributes")
    if tags:
        record["tags"] = _merge(record.get("tags"), tags, "tags")
    return record


def _after_prefix(name: str, prefixes: tuple[str, ...]) -> str | None:
    """`colour` for `tags.colour` and prefixes ("tags.", ...); None when no prefix matches."""
    for prefix in prefixes:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return None


def _merge(base: Any, extra: dict[str, Any], name: str) -> Any:
    """Join a JSON-object cell with its per-key columns; a wrong-typed base is left for validation to reject."""
    if base is None:
        return extra
    if not isinstance(base, dict):
        return base
    no_overlap(base, extra, name)
    return {**base, **extra}


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
