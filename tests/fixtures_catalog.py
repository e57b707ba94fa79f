"""Fixtures: catalog. Write records as JSONL, CSV, TSV or Parquet; real small images; a truncated JPEG."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

# A record is a dict (the JSONL object) or, for JSONL only, a raw line written as is.
Record = dict[str, Any] | str
WriteCatalog = Callable[..., Path]


def flat_row(record: dict[str, Any]) -> dict[str, str]:
    """A record in the flat-file convention: `attr.<name>` and `tags.<family>` (values joined by `|`) columns."""
    row = {k: v for k, v in record.items() if k not in ("attributes", "tags")}
    row.update({f"attr.{name}": value for name, value in (record.get("attributes") or {}).items()})
    for family, values in (record.get("tags") or {}).items():
        row[f"tags.{family}"] = "|".join([values] if isinstance(values, str) else values)
    return {k: "" if v is None else str(v) for k, v in row.items()}


def _flat_table(records: list[Record]) -> tuple[list[str], list[dict[str, str]]]:
    rows = [flat_row(r) for r in records if isinstance(r, dict)]
    columns = list(dict.fromkeys(name for row in rows for name in row))
    return columns, rows


def _write(path: Path, records: list[Record], fmt: str) -> None:
    if fmt == "jsonl":
        lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return
    columns, rows = _flat_table(records)
    if fmt == "parquet":
        table = pa.table({c: pa.array([row.get(c) or None for row in rows], pa.string()) for c in columns})
        pq.write_table(table, path)
        return
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, columns, delimiter="\t" if fmt == "tsv" else ",")
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def write_catalog(tmp_path: Path) -> WriteCatalog:
    """`write_catalog(records, fmt="jsonl", name="catalog")` -> the path of the written file in tmp_path."""

    def write(records: list[Record], fmt: str = "jsonl", name: str = "catalog") -> Path:
        path = tmp_path / f"{name}.{fmt}"
        _write(path, records, fmt)
        return path

    return write


def jpeg_bytes(colour: tuple[int, int, int], size: int = 32) -> bytes:
    """A real, decodable JPEG with some structure (a square on a background)."""
    image = Image.new("RGB", (size, size), (220, 220, 220))
    image.paste(colour, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


@pytest.fixture
def catalog_images(tmp_path: Path) -> dict[str, Path]:
    """Small real images next to where `write_catalog` puts catalogs: `images/red.jpg`, `blue.jpg`, `green.png`."""
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    images = {"red": folder / "red.jpg", "blue": folder / "blue.jpg", "green": folder / "green.png"}
    images["red"].write_bytes(jpeg_bytes((200, 30, 30)))
    images["blue"].write_bytes(jpeg_bytes((30, 30, 200)))
    Image.new("RGB", (16, 16), (30, 160, 30)).save(images["green"], "PNG")
    return images


@pytest.fixture
def truncated_jpeg(tmp_path: Path) -> Path:
    """A JPEG cut in half: Pillow's `verify()` accepts it, only decoding the pixels finds the damage."""
    path = tmp_path / "images" / "truncated.jpg"
    path.parent.mkdir(exist_ok=True)
    noisy = io.BytesIO()
    Image.effect_noise((128, 128), 60).convert("RGB").save(noisy, "JPEG", quality=90)  # pixel data dominates
    whole = noisy.getvalue()
    path.write_bytes(whole[: len(whole) // 2])
    return path
