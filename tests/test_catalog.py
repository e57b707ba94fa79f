"""Catalog reader: every kind of bad record is rejected with its line, id and reason, and the rest comes through."""

from __future__ import annotations

import gc
import json
import shutil
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fixtures_catalog import WriteCatalog
from shoptag.catalog.readers import CatalogError, read_catalog
from shoptag.catalog.records import Product, Reject
from shoptag.catalog.rejects import write_rejects
from shoptag.core.errors import NotFound
from shoptag.core.settings import CatalogSettings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GOOD_BEFORE = {"id": "good-1", "title": "Navy Blue Shirt"}
GOOD_AFTER = {"id": "good-2", "title": "黑色牛仔裤"}


def read_all(path: Path, settings: CatalogSettings | None = None, **kwargs: Any) -> list[Product | Reject]:
    return list(read_catalog(path, settings or CatalogSettings(), **kwargs))


def only_reject(write_catalog: WriteCatalog, bad: Any, settings: CatalogSettings | None = None) -> Reject:
    """Write good, bad, good; the good ones must come through and the bad one be the only reject, on line 2."""
    results = read_all(write_catalog([GOOD_BEFORE, bad, GOOD_AFTER]), settings)
    products = [r for r in results if isinstance(r, Product)]
    rejects = [r for r in results if isinstance(r, Reject)]
    assert [p.id for p in products] == ["good-1", "good-2"]
    assert len(rejects) == 1 and rejects[0].line == 2
    return rejects[0]


# --- one test per kind of bad record -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "product_id", "reason"),
    [
        ('{"id": "x", "title": "no closing brace"', None, "unparsable line: invalid JSON"),
        ('["an", "array"]', None, "not a JSON object (got array)"),
        ('"just a string"', None, "not a JSON object (got string)"),
        ({"title": "no id"}, None, "missing id"),
        ({"id": "   ", "title": "blank id"}, None, "missing id: the id is empty"),
        ({"id": None, "title": "null id"}, None, "missing id"),
        ({"id": True, "title": "bool id"}, None, "id: expected a string or integer, got boolean"),
        ({"id": ["a"], "title": "list id"}, None, "id: expected a string or integer, got array"),
        ({"id": 1.5, "title": "float id"}, None, "id: expected a string or integer, got number"),
        ({"id": "t", "title": 42}, "t", "title: expected a string, got integer"),
        ({"id": "d", "title": "x", "description": {"a": 1}}, "d", "description: expected a string, got object"),
        ({"id": "a", "title": "x", "attributes": ["cotton"]}, "a", "attributes: expected an object, got array"),
        ({"id": "a2", "title": "x", "attributes": {"brand": "A"}, "brand": "B"}, "a2", "'brand' given twice"),
        ({"id": "g", "title": "x", "tags": ["Shirts"]}, "g", "tags: expected an object"),
        ({"id": "g2", "title": "x", "tags": {"colour": [{"v": "Red"}]}}, "g2", "tags.colour: expected strings, got object"),
        ({"id": "n", "attributes": {"brand": "X"}}, "n", "nothing to tag: no title, description or image"),
        ({"id": "p", "title": "x", "attributes": {"price": "19,99 EUR"}}, "p",
         "attributes.price: '19,99 EUR' is not a number, and 'price' is a numeric attribute"),
        ({"id": "p2", "title": "x", "price": "N/A"}, "p2", "attributes.price: 'N/A' is not a number"),
        ({"id": "u", "title": "x", "image": "https://cdn.example.com/u.jpg"}, "u", "image: URL"),
        ({"id": "s", "title": "x", "image": "ftp://example.com/s.jpg"}, "s", "image: unsupported URL scheme 'ftp'"),
        ({"id": "m", "title": "x", "image": "images/none.jpg"}, "m", "image: file not found"),
        ({"id": "i", "title": "x", "image": 7}, "i", "image: expected a path or URL string, got integer"),
        ({"id": "good-1", "title": "again"}, "good-1", "duplicate id 'good-1': first seen on line 1, kept"),
    ],
)
def test_bad_record_is_rejected_with_line_id_and_reason(
    write_catalog: WriteCatalog, bad: Any, product_id: str | None, reason: str
) -> None:
    reject = only_reject(write_catalog, bad)
    assert reject.product_id == product_id
    assert reason in reject.reason
    assert reject.raw == (bad if isinstance(bad, str) else json.dumps(bad, ensure_ascii=False))


def test_text_over_the_limit_names_the_field(write_catalog: WriteCatalog) -> None:
    settings = CatalogSettings(max_text_chars=50)
    reject = only_reject(write_catalog, {"id": "long", "title": "x", "description": "长" * 51}, settings)
    assert reject.product_id == "long"
    assert reject.reason.startswith("description: text too long: 51 characters, over the limit of 50")


def test_text_over_the_limit_counts_all_fields_together(write_catalog: WriteCatalog) -> None:
    settings = CatalogSettings(max_text_chars=50)
    bad = {"id": "sum", "title": "t" * 30, "description": "d" * 30}
    assert "title + description + attributes are 61 characters" in only_reject(write_catalog, bad, settings).reason


def test_raw_of_a_reject_is_truncated(write_catalog: WriteCatalog) -> None:
    reject = only_reject(write_catalog, "{" + "x" * 5000)
    assert len(reject.raw) == 2000


def test_line_that_is_not_utf8_is_rejected(write_catalog: WriteCatalog) -> None:
    path = write_catalog([GOOD_BEFORE, '{"id": "gbk", "title": "PLACEHOLDER"}', GOOD_AFTER])
    path.write_bytes(path.read_bytes().replace(b"PLACEHOLDER", "牛仔裤".encode("gbk")))
    results = read_all(path)
    assert [r.id for r in results if isinstance(r, Product)] == ["good-1", "good-2"]
    (reject,) = [r for r in results if isinstance(r, Reject)]
    assert reject.line == 2 and "not valid UTF-8" in reject.reason


def test_corrupt_image_is_rejected(write_catalog: WriteCatalog, tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "fake.jpg").write_bytes(b"this is not a picture")
    reject = only_reject(write_catalog, {"id": "c", "title": "x", "image": "images/fake.jpg"})
    assert reject.product_id == "c" and reject.reason.startswith("image: corrupt or unsupported image")


def test_truncated_image_is_rejected_although_verify_accepts_it(
    write_catalog: WriteCatalog, truncated_jpeg: Path
) -> None:
    with Image.open(truncated_jpeg) as im:
        im.verify()  # the fixture is the case `verify` alone misses
    reject = only_reject(write_catalog, {"id": "cut", "title": "x", "image": "images/truncated.jpg"})
    assert reject.product_id == "cut" and "corrupt" in reject.reason and "truncated" in reject.reason


def test_image_that_is_not_a_file_is_rejected(write_catalog: WriteCatalog, catalog_images: dict[str, Path]) -> None:
    reject = only_reject(write_catalog, {"id": "dir", "title": "x", "image": "images"})
    assert reject.reason.startswith("image: ") and reject.reason.endswith("is not a file")


def test_image_over_the_size_limit_is_rejected(write_catalog: WriteCatalog, catalog_images: dict[str, Path]) -> None:
    settings = CatalogSettings(max_image_bytes=100)
    reject = only_reject(write_catalog, {"id": "big", "title": "x", "image": "images/red.jpg"}, settings)
    assert reject.product_id == "big" and "over the limit of 100" in reject.reason


def test_csv_row_with_wrong_field_count_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('id,title\ngood-1,Shirt\nbad,"Jeans, blue",extra\ngood-2,"multi\nline title"\ngood-3,Watch\n')
    results = read_all(path)
    assert [(r.id, r.line) for r in results if isinstance(r, Product)] == [("good-1", 2), ("good-2", 4), ("good-3", 6)]
    (reject,) = [r for r in results if isinstance(r, Reject)]
    assert (reject.line, reject.product_id) == (3, None)
    assert reject.reason == "unparsable CSV row: 3 fields, the header has 2"


def test_csv_quote_never_closed_is_named_with_the_line_it_opens_on(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('id,title,description\ngood-1,Shirt,x\nbad,"Jeans, blue,y\ngood-2,Dress,z\ngood-3,Watch,w\n')
    results = read_all(path)
    assert [r.id for r in results if isinstance(r, Product)] == ["good-1"]
    (reject,) = [r for r in results if isinstance(r, Reject)]
    assert reject.line == 3 and reject.reason.startswith(
        "unterminated quote: the quoted field opened on line 3 is never closed, so lines 3-5 were read as one field")
    long = tmp_path / "long.csv"  # past the csv module's field limit the reader stops and goes on after it
    long.write_text('id,title\ngood-1,Shirt\nbad,"Jeans\n' + "".join(f"p{i},Title {i:06}\n" for i in range(20_000)))
    reject = next(r for r in read_all(long) if isinstance(r, Reject))
    assert reject.line == 3 and "most often an unterminated quote; lines 3-" in reject.reason


def test_csv_json_cell_that_is_not_json_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('id,title,tags\ngood-1,Shirt,\nbad,Jeans,{category: Jeans}\ngood-2,Watch,"{""category"": [""Watches""]}"\n')
    results = read_all(path)
    assert [r.id for r in results if isinstance(r, Product)] == ["good-1", "good-2"]
    assert results[2].tags == {"category": ("Watches",)}
    assert results[1].line == 3 and results[1].reason.startswith("tags: cell is not valid JSON")


def test_first_record_rejected_for_another_reason_does_not_claim_its_id(write_catalog: WriteCatalog) -> None:
    results = read_all(write_catalog([{"id": "x", "title": 1}, {"id": "x", "title": "fixed"}]))
    assert isinstance(results[0], Reject) and isinstance(results[1], Product)


def test_image_url_is_kept_when_allowed(write_catalog: WriteCatalog) -> None:
    (product,) = read_all(write_catalog([{"id": "u", "image": "https://cdn.example.com/u.jpg"}]),
                          CatalogSettings(allow_image_urls=True))
    assert product.image == "https://cdn.example.com/u.jpg" and product.image_hash is None


# --- the catalog file itself ------------------------------------------------------------------------------


def test_unreadable_catalog_file_raises_catalog_error(tmp_path: Path, write_catalog: WriteCatalog) -> None:
    with pytest.raises(NotFound, match="catalog file not found"):  # as a missing corrections or events file
        read_catalog(tmp_path / "absent.jsonl", CatalogSettings())
    with pytest.raises(CatalogError, match="not a file"):
        read_catalog(tmp_path, CatalogSettings(), fmt="jsonl")
    with pytest.raises(CatalogError, match="unknown catalog format"):
        read_catalog(write_catalog([GOOD_BEFORE], name="x").rename(tmp_path / "x.xml"), CatalogSettings())
    (tmp_path / "noid.csv").write_text("sku,title\n1,Shirt\n")
    with pytest.raises(CatalogError, match="no `id` column"):
        read_catalog(tmp_path / "noid.csv", CatalogSettings())
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(CatalogError, match="not a readable Parquet file"):
        read_catalog(tmp_path / "bad.parquet", CatalogSettings())


def test_format_can_be_forced(tmp_path: Path) -> None:
    path = tmp_path / "export.txt"
    path.write_text("id\ttitle\n1\tShirt\n")
    (product,) = read_all(path, fmt="tsv")
    assert (product.id, product.title) == ("1", "Shirt")


# --- formats agree ----------------------------------------------------------------------------------------

RICH = [
    {"id": "p1", "title": "男士修身衬衫", "description": "<p>纯棉</p>", "image": "images/red.jpg",
     "attributes": {"material": "棉", "brand": "雅戈尔"}, "tags": {"category": ["Shirts"], "scene": ["通勤", "party"]}},
    {"id": "p2", "title": "Blue Jeans", "image": "images/green.png", "tags": {"colour": ["Blue"]}},
    {"id": "3", "description": "only a description", "attributes": {"size": "32"}},
]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet"])
def test_formats_give_the_same_products_and_hashes(
    write_catalog: WriteCatalog, catalog_images: dict[str, Path], fmt: str
) -> None:
    reference = read_all(write_catalog(RICH, "jsonl"))
    other = read_all(write_catalog(RICH, fmt))
    assert all(isinstance(p, Product) for p in reference + other)
    assert [replace(p, line=None) for p in other] == [replace(p, line=None) for p in reference]
    assert [p.content_hash for p in other] == [p.content_hash for p in reference]
    first_line = 2 if fmt in ("csv", "tsv") else 1  # the header is line 1; Parquet counts rows
    assert [p.line for p in other] == [first_line, first_line + 1, first_line + 2]


def test_parquet_typed_columns_match_jsonl(write_catalog: WriteCatalog, tmp_path: Path) -> None:
    """Integer ids, list tag columns, a map `attributes` column and a JSON `tags` column."""
    table = pa.table({
        "id": pa.array([7], pa.int64()),
        "title": ["Red Dress"],
        "attributes": pa.array([[("brand", "Mango")]], pa.map_(pa.string(), pa.string())),
        "tag:colour": pa.array([["Red", "Dark Red"]], pa.list_(pa.string())),
        "tags": ['{"category": ["Dresses"]}'],
    })
    pq.write_table(table, tmp_path / "typed.parquet")
    record = {"id": 7, "title": "Red Dress", "attributes": {"brand": "Mango"},
              "tags": {"category": ["Dresses"], "colour": ["Red", "Dark Red"]}}
    (expected,) = read_all(write_catalog([record]))
    (got,) = read_all(tmp_path / "typed.parquet")
    assert got == expected


def test_csv_column_conventions(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(
        'id,title,attr:material,brand,tag.style,tags:scene,attributes\n'
        '1,Shirt,cotton,Uniqlo,classic, 通勤 | party |通勤,"{""fit"": ""slim""}"\n',
        encoding="utf-8",
    )
    (product,) = read_all(path)
    assert product.attributes == {"brand": "Uniqlo", "fit": "slim", "material": "cotton"}
    assert product.tags == {"style": ("classic",), "scene": ("通勤", "party")}


# --- normalisation ----------------------------------------------------------------------------------------


def test_text_is_normalised(write_catalog: WriteCatalog) -> None:
    record = {
        "id": " 42 ",
        "title": "  <b>Ｎａｖｙ</b>\u3000Ｂｌｕｅ\tShirt\u200b  ",
        "description": "<p>夏季&amp;春季<br>纯棉&lt;舒适&gt;</p><script>alert(1)</script>\n\n蓝色 牛仔裤",
        "attributes": {"尺码": 32, "on_sale": True, "sizes": ["S", "M"], "empty": "  "},
        "tags": {"colour": [" Navy Blue ", "Navy Blue", "Ｂｌｕｅ"], "scene": "通勤", "style": []},
    }
    (product,) = read_all(write_catalog([record]))
    assert product.id == "42"
    assert product.title == "Navy Blue Shirt"
    assert product.description == "夏季&春季 纯棉<舒适> 蓝色 牛仔裤"
    assert product.attributes == {"on_sale": "true", "sizes": '["S","M"]', "尺码": "32"}
    assert product.tags == {"colour": ("Navy Blue", "Blue"), "scene": ("通勤",), "style": ()}  # []: none applies
    assert product.encoder_text() == "Navy Blue Shirt\n夏季&春季 纯棉<舒适> 蓝色 牛仔裤\ntrue\n[\"S\",\"M\"]\n32"


def test_chinese_text_is_kept(write_catalog: WriteCatalog) -> None:
    (product,) = read_all(write_catalog([{"id": "c", "title": "女士碎花雪纺连衣裙。夏季新款"}]))
    assert product.title == "女士碎花雪纺连衣裙。夏季新款"


def test_image_path_is_resolved_against_the_catalog(write_catalog: WriteCatalog, catalog_images: dict[str, Path]) -> None:
    (product,) = read_all(write_catalog([{"id": "i", "title": "x", "image": "images/../images/blue.jpg"}]))
    assert product.image == str(catalog_images["blue"].resolve())
    assert product.image_hash is not None and len(product.image_hash) == 64


# --- change detection -------------------------------------------------------------------------------------

BASE = {"id": "p", "title": "Red Shirt", "description": "cotton", "image": "images/red.jpg",
        "attributes": {"brand": "A", "fit": "slim"}, "tags": {"category": ["Shirts"], "scene": ["party", "通勤"]}}


def product_of(write_catalog: WriteCatalog, record: dict[str, Any], name: str = "catalog") -> Product:
    (product,) = read_all(write_catalog([record], name=name))
    assert isinstance(product, Product)
    return product


def test_rereading_the_same_catalog_gives_the_same_hashes(
    write_catalog: WriteCatalog, catalog_images: dict[str, Path]
) -> None:
    path = write_catalog([BASE])
    assert read_all(path) == read_all(path)


@pytest.mark.parametrize(
    ("change", "text_changes"),
    [
        ({"title": "Red Shirt XL"}, True),
        ({"description": "linen"}, True),
        ({"attributes": {"brand": "B", "fit": "slim"}}, True),
        ({"tags": {"category": ["Shirts"], "scene": ["party"]}}, False),
        ({"tags": {"category": ["T-Shirts"], "scene": ["party", "通勤"]}}, False),
        ({"image": "images/blue.jpg"}, False),
        ({"image": None}, False),
    ],
)
def test_a_change_changes_the_content_hash(
    write_catalog: WriteCatalog, catalog_images: dict[str, Path], change: dict[str, Any], text_changes: bool
) -> None:
    before = product_of(write_catalog, BASE, "before")
    after = product_of(write_catalog, {**BASE, **change}, "after")
    assert after.content_hash != before.content_hash
    assert (after.text_hash != before.text_hash) is text_changes


def test_what_does_not_change_the_product_keeps_the_hash(
    write_catalog: WriteCatalog, catalog_images: dict[str, Path], tmp_path: Path
) -> None:
    """Key order, tag order, whitespace and the image's location are not content."""
    before = product_of(write_catalog, BASE, "before")
    moved = tmp_path / "elsewhere" / "pics"
    moved.mkdir(parents=True)
    shutil.copy(catalog_images["red"], moved / "red.jpg")
    same = {"tags": {"scene": ["通勤", "party"], "category": ["Shirts"]}, "attributes": {"fit": "slim", "brand": "A"},
            "title": "  Red   Shirt ", "image": "elsewhere/pics/red.jpg", "description": "cotton", "id": "p"}
    after = product_of(write_catalog, same, "after")
    assert after.image != before.image
    assert (after.content_hash, after.text_hash, after.image_hash) == (before.content_hash, before.text_hash, before.image_hash)


def test_changed_image_bytes_change_the_hash(write_catalog: WriteCatalog, catalog_images: dict[str, Path]) -> None:
    path = write_catalog([BASE])
    (before,) = read_all(path)
    shutil.copy(catalog_images["blue"], catalog_images["red"])
    (after,) = read_all(path)
    assert after.image == before.image and after.image_hash != before.image_hash
    assert after.content_hash != before.content_hash


# --- the bundled examples ---------------------------------------------------------------------------------


def test_sample_catalog_reads_with_no_rejects() -> None:
    results = read_all(EXAMPLES / "sample_catalog.jsonl")
    assert all(isinstance(r, Product) for r in results), [r for r in results if isinstance(r, Reject)]
    assert 60 <= len(results) <= 80
    labelled = [p for p in results if p.tags]
    assert 0.6 <= len(labelled) / len(results) <= 0.8
    categories: dict[str, int] = {}
    for product in labelled:
        (category,) = product.tags["category"]
        (_colour,) = product.tags["colour"]
        categories[category] = categories.get(category, 0) + 1
    assert len(categories) >= 5 and min(categories.values()) >= 5
    with_images = [p for p in results if p.image]
    assert 5 <= len(with_images) <= 10 and all(p.image_hash for p in with_images)
    assert any("\u4e00" <= ch <= "\u9fff" for p in results for ch in p.title)
    assert sum(f.stat().st_size for f in (EXAMPLES / "images").iterdir()) < 100_000


def test_bad_catalog_yields_exactly_the_expected_rejects() -> None:
    results = read_all(EXAMPLES / "bad_catalog.jsonl")
    assert [(p.line, p.id) for p in results if isinstance(p, Product)] == [(1, "ok-1"), (16, "ok-2")]
    rejects = [(r.line, r.product_id, r.reason.split(" (")[0].split(":")[0]) for r in results if isinstance(r, Reject)]
    assert rejects == [
        (2, None, "unparsable line"),
        (3, None, "not a JSON object"),
        (4, None, "missing id"),
        (5, None, "missing id"),
        (6, None, "id"),
        (7, "bad-title", "title"),
        (8, "bad-attributes", "attributes"),
        (9, "bad-tags", "tags"),
        (10, "too-long", "description"),
        (11, "missing-image", "image"),
        (12, "corrupt-image", "image"),
        (13, "url-image", "image"),
        (14, "ok-1", "duplicate id 'ok-1'"),
        (15, "nothing", "nothing to tag"),
    ]


def test_the_label_counts_the_examples_state_are_the_data_s() -> None:
    """examples/README.md counts the sample's labelled products; the demo, which also ingests the bad catalog,
    trains on those and the bad catalog's labelled good lines: its step and the README say that number."""
    sample = [p for p in read_all(EXAMPLES / "sample_catalog.jsonl") if p.tags]
    demo = len(sample) + sum(1 for p in read_all(EXAMPLES / "bad_catalog.jsonl") if isinstance(p, Product) and p.tags)
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert f"**Labelled ({len(sample)}, " in readme and f"the demo trains on {demo}:" in readme
    assert f"{demo} labelled products" in (EXAMPLES / "demo.sh").read_text(encoding="utf-8")


# --- rejects file and streaming ---------------------------------------------------------------------------


def test_write_rejects_is_jsonl_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "run" / "rejects.jsonl"
    rejects = [Reject(line=2, product_id=None, reason="missing id", raw='{"title": "牛仔裤"}'),
               Reject(line=None, product_id="p9", reason="image: file not found", raw="")]
    assert write_rejects(rejects, path) == 2
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines[0] == {"line": 2, "product_id": None, "reason": "missing id", "raw": '{"title": "牛仔裤"}'}
    assert lines[1]["product_id"] == "p9"

    def failing() -> Any:
        yield rejects[0]
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_rejects(failing(), path)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2  # the previous file is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["rejects.jsonl"]  # no temp file left


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_large_catalog_is_streamed(write_catalog: WriteCatalog, fmt: str) -> None:
    """50k records: a line appended after reading started is still seen (the file is not read up front),
    and a product already handed out is freed while reading goes on (the reader does not keep them)."""
    records = [{"id": i, "title": f"商品 {i} 纯棉衬衫", "description": "舒适 透气", "tags": {"category": "Shirts"}}
               for i in range(50_000)]
    path = write_catalog(records, fmt)
    products = read_catalog(path, CatalogSettings())
    first = next(products)
    seen_first = weakref.ref(first)
    with path.open("a", encoding="utf-8") as f:
        f.write('{"id": "late", "title": "appended"}\n' if fmt == "jsonl" else "late,appended,,\n")
    del first
    next(products)  # the reader may hold the record it is on, never an earlier one
    gc.collect()
    assert seen_first() is None
    rest = [p.id for p in products if isinstance(p, Product)]
    assert len(rest) == 49_999 and rest[-1] == "late"
