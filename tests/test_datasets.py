"""Public data sets as catalogs: rows, families, unknown cells, BIO spans, image extraction."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from shoptag.core.errors import BadInput
from shoptag.pipeline.datasets import (
    FASHION_FAMILIES,
    bio_spans,
    fashion_catalog,
    fashion_records,
    main,
    taobao_records,
    taxonomy,
)

pytestmark = pytest.mark.data


def _csv_rows(data_dir: Path, n: int) -> list[dict[str, str]]:
    with open(data_dir / "fashion" / "products.csv", newline="", encoding="utf-8") as f:
        return [row for _, row in zip(range(n), csv.DictReader(f))]


def test_fashion_slice_rows_and_families(fashion_slice, data_dir: Path) -> None:
    records = fashion_slice.records
    assert len(records) == 2000
    assert [r["id"] for r in records] == [row["id"] for row in _csv_rows(data_dir, 2000)]  # first N, file order
    first = records[0]
    assert first == {
        "id": "15970",
        "title": "Turtle Check Men Navy Blue Shirt",
        "tags": {
            "gender": ["Men"],
            "masterCategory": ["Apparel"],
            "subCategory": ["Topwear"],
            "articleType": ["Shirts"],
            "baseColour": ["Navy Blue"],
            "season": ["Fall"],
            "usage": ["Casual"],
        },
        "attributes": {"year": "2011"},
    }
    assert all(set(r["tags"]) <= set(FASHION_FAMILIES) for r in records)
    assert all(len(values) == 1 for r in records for values in r["tags"].values())


def test_fashion_unknown_cells_are_not_tags(fashion_slice) -> None:
    by_id = {r["id"]: r for r in fashion_slice.records}
    assert "usage" not in by_id["56489"]["tags"]  # usage NA
    assert "season" not in by_id["5402"]["tags"]  # season empty
    assert by_id["5402"]["tags"]["usage"] == ["Sports"]
    values = {v for r in fashion_slice.records for vs in r["tags"].values() for v in vs}
    assert "NA" not in values and "" not in values


def test_fashion_full_counts(data_dir: Path) -> None:
    records = fashion_records(data_dir)
    assert len(records) == 44_446
    assert len({r["tags"]["articleType"][0] for r in records}) == 143
    assert sum("baseColour" not in r["tags"] for r in records) == 15
    assert sum("usage" not in r["tags"] for r in records) == 317


def test_image_extraction_is_idempotent(data_dir: Path, tmp_path: Path) -> None:
    image_dir = tmp_path / "images"
    out = fashion_catalog(data_dir, tmp_path / "c.jsonl", limit=5, images=True, image_dir=image_dir)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    paths = [Path(r["image"]) for r in records]
    assert [p.name for p in paths] == [f"{r['id']}.jpg" for r in records]
    assert all(p.read_bytes()[:2] == b"\xff\xd8" for p in paths)  # JPEG
    before = {p: p.stat().st_mtime_ns for p in paths}
    fashion_catalog(data_dir, tmp_path / "c.jsonl", limit=5, images=True, image_dir=image_dir)
    assert {p: p.stat().st_mtime_ns for p in paths} == before  # not written again
    assert sorted(image_dir.iterdir()) == sorted(paths)  # no temporary files left behind


def test_images_need_a_folder(data_dir: Path) -> None:
    with pytest.raises(BadInput, match="image_dir"):
        fashion_records(data_dir, limit=1, images=True)


def test_bio_spans() -> None:
    tagged = [("耐", "B-HPPX"), ("克", "I-HPPX"), ("跑", "B-HCCX"), ("鞋", "I-HCCX"), ("/", "O"), ("包", "I-HCCX")]
    assert bio_spans(tagged) == [("HPPX", "耐克"), ("HCCX", "跑鞋"), ("HCCX", "包")]


def test_taobao_known_titles(taobao_slice) -> None:
    records = taobao_slice.records
    assert len(records) == 500 and len({r["id"] for r in records}) == 500
    assert records[2] == {
        "id": "taobao-train-2",
        "title": "羚跑商务背包双肩包男士防盗多功能出差韩版休闲15.6寸电脑包皮潮",
        "tags": {"product_type": ["背包", "双肩包", "电脑包"], "brand": ["羚跑"]},
    }
    # repeated spans kept once; no brand span: "no brand applies", a label
    assert records[0]["tags"] == {"product_type": ["点卡", "元宝"], "brand": []}
    assert all(set(r["tags"]) == {"product_type", "brand"} for r in records)


def test_taobao_ids_do_not_depend_on_the_split(data_dir: Path) -> None:
    every = taobao_records(data_dir, split="all")
    dev = taobao_records(data_dir, split="dev")
    assert len(every) == 6998 and len(dev) == 998
    assert every[6000:] == dev
    with pytest.raises(BadInput, match="split"):
        taobao_records(data_dir, split="test")


def test_taxonomy(data_dir: Path) -> None:
    entries = taxonomy(data_dir)
    assert len(entries) == 5595
    assert entries[0] == (1, ["Animals & Pet Supplies"])
    assert max(len(path) for _, path in entries) == 7


def test_command_line_writes_a_catalog(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "t.jsonl"
    main(["taobao", "--out", str(out), "--limit", "3", "--data-dir", str(data_dir)])
    assert capsys.readouterr().out.strip() == str(out)
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3
