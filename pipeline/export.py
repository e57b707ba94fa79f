"""Stage: every product's tags out of the store, as JSONL, CSV or Parquet, streamed.

Per product and family only the tags that win are written (feedback, else catalog, else model; the same
rule as `Store.effective_tags`), each with its score, status (`accepted` / `review`) and source. Rows are
read in one ordered pass over the store and written as they come, so memory does not grow with the catalog.
JSONL has one line per product (products without a tag too); CSV and Parquet one row per tag.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import IO, Literal

from shoptag.core.errors import BadInput
from shoptag.core.files import atomic_write
from shoptag.store.records import TAG_SOURCES, Store

Format = Literal["jsonl", "csv", "parquet"]
Status = Literal["accepted", "review", "all"]
COLUMNS = ("id", "family", "value", "score", "status", "source")
PARQUET_BATCH = 50_000


@dataclass
class ExportReport:
    out: str
    format: str
    products: int = 0
    tags: int = 0
    write_seconds: float = 0.0  # the streaming write alone: the command's start-up and imports are not in it
    write_products_per_second: float = 0.0


Tag = tuple[str, str, float | None, str, str]  # family, value, score, status, source


def product_tags(store: Store, status: Status = "all", families: Iterable[str] | None = None) -> Iterator[tuple[str, list[Tag]]]:
    """(product id, its winning tags) for every product, in id order."""
    wanted = set(families) if families else None
    rank = {source: i for i, source in enumerate(TAG_SOURCES)}
    for pid, rows in groupby(store.stream_tags(), key=itemgetter(0)):
        best: dict[str, int] = {}
        kept: list[tuple[int, Tag]] = []
        for _, family, value, source, tag_status, score in rows:
            if family is None or (wanted is not None and family not in wanted):
                continue
            r = rank[source]
            if r < best.get(family, len(rank)):
                best[family] = r
            kept.append((r, (family, value, score, tag_status, source)))
        yield pid, [
            tag for r, tag in kept if r == best[tag[0]] and (status == "all" or tag[3] == status)
        ]


def _write_jsonl(fh: IO[str], products: Iterator[tuple[str, list[Tag]]], report: ExportReport) -> None:
    """One JSON object a product, assembled from cached JSON fragments: families, values, statuses and
    sources repeat across a catalog, and encoding each once is what makes the export stream at the speed of
    the store read rather than of `json.dumps` over nested dicts."""
    quoted: dict[str, str] = {}

    def q(text: str) -> str:
        fragment = quoted.get(text)
        if fragment is None:
            fragment = quoted[text] = json.dumps(text, ensure_ascii=False)
        return fragment

    for pid, tags in products:
        grouped: dict[str, list[str]] = {}
        for family, value, score, status, source in tags:
            grouped.setdefault(family, []).append(
                f'{{"value":{q(value)},"score":{"null" if score is None else repr(float(score))},'
                f'"status":{q(status)},"source":{q(source)}}}'
            )
        families = ",".join(f"{q(family)}:[{','.join(items)}]" for family, items in grouped.items())
        fh.write(f'{{"id":{json.dumps(pid, ensure_ascii=False)},"tags":{{{families}}}}}\n')
        report.products += 1
        report.tags += len(tags)


def _write_csv(fh: IO[str], products: Iterator[tuple[str, list[Tag]]], report: ExportReport) -> None:
    writer = csv.writer(fh)
    writer.writerow(COLUMNS)
    for pid, tags in products:
        writer.writerows((pid, *tag) for tag in tags)
        report.products += 1
        report.tags += len(tags)


def _write_parquet(fh: IO[bytes], products: Iterator[tuple[str, list[Tag]]], report: ExportReport) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("family", pa.string()), ("value", pa.string()),
                        ("score", pa.float64()), ("status", pa.string()), ("source", pa.string())])
    with pq.ParquetWriter(fh, schema) as writer:
        columns: list[list] = [[] for _ in COLUMNS]

        def flush() -> None:
            writer.write_table(pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, schema)], schema=schema))
            for c in columns:
                c.clear()

        for pid, tags in products:
            for tag in tags:
                for column, value in zip(columns, (pid, *tag)):
                    column.append(value)
            report.products += 1
            report.tags += len(tags)
            if len(columns[0]) >= PARQUET_BATCH:
                flush()
        flush()


@contextmanager
def _output(out: Path | None, binary: bool) -> Iterator[IO]:
    """The file to write (atomically: a reader never sees half an export), or stdout."""
    if out is None:
        yield sys.stdout.buffer if binary else sys.stdout
        return
    with atomic_write(out, "wb" if binary else "w", encoding=None if binary else "utf-8") as fh:
        yield fh


def export(
    store: Store, out: Path | None, fmt: Format = "jsonl", status: Status = "all", families: Iterable[str] | None = None
) -> ExportReport:
    """Write every product's tags to `out` (None: stdout; not for Parquet) and say how many, and how fast the
    write went (timed from the first row read to the file closed)."""
    if fmt == "parquet" and out is None:
        raise BadInput("parquet needs a file: pass --out FILE")
    report = ExportReport(str(out) if out else "-", fmt)
    start = time.perf_counter()
    writer = {"jsonl": _write_jsonl, "csv": _write_csv, "parquet": _write_parquet}[fmt]
    with _output(out, binary=fmt == "parquet") as fh:
        writer(fh, product_tags(store, status, families), report)
    report.write_seconds = round(time.perf_counter() - start, 3)
    report.write_products_per_second = round(report.products / max(report.write_seconds, 1e-9), 1)
    return report
