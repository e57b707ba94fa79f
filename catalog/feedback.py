"""The feedback record: the right values of one product in one tag family. `POST /feedback` and
`shoptag feedback` validate with this one model, so a typo (`value` for `values`, a missing `values`) is a
422 over HTTP and a reject with its line in a corrections file, never a silent "no value applies".

A corrections file is JSONL (one object per line, `values` a list) or CSV (columns `id`, `family`, `values`,
values separated by `|`); every non-blank line or row becomes a correction or a reject naming its line. A JSON
string for `values` is a reject, not a one-value list: `"Shirts"` may as well be a list the writer forgot.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError

from shoptag.core.files import input_file

from .records import MAX_ID_CHARS, RAW_CHARS, Reject, json_error

MAX_NAME_CHARS = 200  # a tag family or value
MAX_VALUES = 100  # values in one correction


def _int_as_text(value: Any) -> Any:
    """Catalog ids may be integers (as in `shoptag ingest`); booleans are not ids."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


ProductId = Annotated[str, BeforeValidator(_int_as_text),
                      StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ID_CHARS)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NAME_CHARS)]


class Correction(BaseModel):
    """The right values of one product in one tag family; an empty list means no value applies. Unknown
    keys and a missing `values` are errors: a misspelt key must never read as "no value applies"."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"id": "sku-1001", "family": "colour", "values": ["Navy Blue"]}]})

    id: ProductId
    family: Name
    values: Annotated[list[Name], Field(max_length=MAX_VALUES)]


def problems(error: ValidationError) -> str:
    """A validation error as one line: `field: what is wrong` for each field at fault."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}" for e in error.errors())


def read_corrections(path: Path) -> tuple[list[tuple[int, Correction]], list[Reject]]:
    """(line, correction) pairs and rejects, one or the other for every non-blank line or row of `path`."""
    items: list[tuple[int, Correction]] = []
    rejects: list[Reject] = []
    input_file(path, "corrections file")
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
    for line, raw, record in rows:
        raw = raw[:RAW_CHARS]
        if isinstance(record, str):
            rejects.append(Reject(line, None, f"bad feedback: {record}", raw))
            continue
        try:
            items.append((line, Correction.model_validate(record)))
        except ValidationError as exc:
            pid = record.get("id") if isinstance(record.get("id"), str) else None
            rejects.append(Reject(line, pid, f"bad feedback: {problems(exc)}", raw))
    return items, rejects


Row = tuple[int, str, dict[str, Any] | str]  # line, raw text, the record or why it could not be read


def _jsonl_rows(path: Path) -> Iterator[Row]:
    with path.open("rb") as fh:
        for line, data in enumerate(fh, start=1):
            if not data.strip():
                continue
            raw = data.decode("utf-8", "replace").rstrip("\r\n")
            try:
                record = json.loads(data.decode("utf-8"))
            except UnicodeDecodeError:
                yield line, raw, "line is not valid UTF-8"
                continue
            except json.JSONDecodeError as exc:
                yield line, raw, json_error(exc)
                continue
            except RecursionError:
                yield line, raw, "JSON nested too deeply"
                continue
            yield line, raw, record if isinstance(record, dict) else "not a JSON object"


def _csv_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            raw = json.dumps(row, ensure_ascii=False, default=str)
            if not any(v and v.strip() for v in row.values() if isinstance(v, str)):
                continue
            if None in row:
                yield reader.line_num, raw, "more fields than the header has"
            elif any("\udc80" <= c <= "\udcff" for v in row.values() if v for c in v):
                yield reader.line_num, raw.encode("utf-8", "replace").decode(), "row is not valid UTF-8"
            else:
                record = {k: v for k, v in row.items() if v is not None}  # a short row lacks keys
                if isinstance(record.get("values"), str):  # `|`-separated; an empty cell is the empty list
                    record["values"] = [v for v in record["values"].split("|") if v.strip()]
                yield reader.line_num, raw, record
