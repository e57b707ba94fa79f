"""Public data sets written as shoptag catalogs, so anyone can rerun our quality benchmarks.

The data files themselves never enter the repository: every function takes the data directory
(``default_data_dir()``: env ``SHOPTAG_DATA_DIR``, else ``../shared/data`` from the working directory).

- fashion (``fashion/products.csv`` + ``fashion-images.zip``): English titles, 7 single-valued tag families.
- taobao-ner (``taobao-ner/{train,dev}.txt``): Chinese titles; their product-type (HCCX) and brand (HPPX)
  spans become two multi-valued tag families.
- Google product taxonomy: a ready tag vocabulary.
- behaviour (``behaviour/items.csv`` + ``events.csv.gz``): a gift shop's items as a catalog (titled items only);
  its purchase lines are read by ``shoptag events`` directly (their column names are accepted aliases).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from shoptag.core.errors import BadInput

FASHION_FAMILIES = ("gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage")
UNKNOWN_CELLS = frozenset({"", "NA"})
TAOBAO_FAMILIES = {"HCCX": "product_type", "HPPX": "brand"}
TAOBAO_SPLITS = ("train", "dev")


def default_data_dir() -> Path:
    """Where the shared data lives: ``$SHOPTAG_DATA_DIR`` or ``../shared/data`` relative to the working directory."""
    return Path(os.environ.get("SHOPTAG_DATA_DIR", "../shared/data"))


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_jsonl(records: Iterable[dict], out: Path) -> Path:
    """Write records one JSON object a line (UTF-8, CJK kept readable), atomically."""
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    _atomic_write_bytes(out, lines.encode("utf-8"))
    return out


def _fashion_rows(data_dir: Path, limit: int | None) -> list[dict[str, str]]:
    """The first `limit` rows of products.csv in file order (all rows when None)."""
    with open(data_dir / "fashion" / "products.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return rows if limit is None else rows[:limit]


def _extract_images(zip_path: Path, ids: list[str], image_dir: Path) -> dict[str, Path]:
    """Extract ``images/<id>.jpg`` for `ids` into `image_dir`; files already there are kept (idempotent).

    Returns the id -> path map of products that have a photo (5 fashion products have none).
    """
    image_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    with zipfile.ZipFile(zip_path) as archive:
        members = set(archive.namelist())
        for pid in ids:
            member = f"images/{pid}.jpg"
            if member not in members:
                continue
            target = image_dir / f"{pid}.jpg"
            if not target.is_file():
                _atomic_write_bytes(target, archive.read(member))
            paths[pid] = target.resolve()
    return paths


def fashion_records(
    data_dir: Path, *, limit: int | None = None, images: bool = False, image_dir: Path | None = None
) -> list[dict]:
    """The fashion products as catalog records (see `fashion_catalog`)."""
    rows = _fashion_rows(data_dir, limit)
    photos: dict[str, Path] = {}
    if images:
        if image_dir is None:
            raise BadInput("images=True needs an image_dir to extract the photos into")
        photos = _extract_images(data_dir / "fashion" / "fashion-images.zip", [r["id"] for r in rows], image_dir)
    records = []
    for row in rows:
        record: dict = {
            "id": row["id"],
            "title": row["productDisplayName"].strip(),
            "tags": {fam: [row[fam].strip()] for fam in FASHION_FAMILIES if row[fam].strip() not in UNKNOWN_CELLS},
            "attributes": {"year": row["year"].strip()} if row["year"].strip() not in UNKNOWN_CELLS else {},
        }
        if row["id"] in photos:
            record["image"] = str(photos[row["id"]])
        records.append(record)
    return records


def fashion_catalog(
    data_dir: Path, out: Path, *, limit: int | None = None, images: bool = False, image_dir: Path | None = None
) -> Path:
    """Write the fashion products as a JSONL catalog at `out` and return `out`.

    title = productDisplayName; one tag family per label column (`FASHION_FAMILIES`), empty and ``NA`` cells
    skipped; attributes = {"year": ...}. `limit` keeps the first N rows in file order. With `images`, the
    photos are extracted once into `image_dir` (absolute paths in ``image``; products without a photo have
    no ``image``).
    """
    return _write_jsonl(fashion_records(data_dir, limit=limit, images=images, image_dir=image_dir), out)


def _bio_titles(path: Path) -> Iterator[list[tuple[str, str]]]:
    """Titles of a BIO file as (char, tag) lists; a blank line ends a title."""
    title: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if not line.strip():
                if title:
                    yield title
                title = []
                continue
            char, tag = line.rsplit(" ", 1)
            title.append((char, tag))
    if title:
        yield title


def bio_spans(title: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(entity type, text) spans of a BIO-tagged title; an ``I-`` without a matching open span starts one."""
    spans: list[tuple[str, str]] = []
    kind, chars = "", []
    for char, tag in [*title, ("", "O")]:
        prefix, _, label = tag.partition("-")
        if prefix == "I" and label == kind:
            chars.append(char)
            continue
        if kind:
            spans.append((kind, "".join(chars)))
        kind, chars = (label, [char]) if prefix in ("B", "I") else ("", [])
    return spans


def _unique(values: Iterable[str]) -> list[str]:
    """Values in first-seen order without repeats."""
    return list(dict.fromkeys(values))


def taobao_records(data_dir: Path, *, split: str = "train", limit: int | None = None) -> list[dict]:
    """The taobao-ner titles as catalog records (see `taobao_catalog`)."""
    if split not in (*TAOBAO_SPLITS, "all"):
        raise BadInput(f"split must be one of train, dev, all; got {split!r}")
    records = []
    for part in TAOBAO_SPLITS if split == "all" else (split,):
        for n, title in enumerate(_bio_titles(data_dir / "taobao-ner" / f"{part}.txt")):
            spans = bio_spans(title)
            # every title is annotated: no span of a kind means no value applies ([]), a label too
            tags = {
                family: _unique(text for k, text in spans if k == kind) for kind, family in TAOBAO_FAMILIES.items()
            }
            records.append({"id": f"taobao-{part}-{n}", "title": "".join(c for c, _ in title), "tags": tags})
    return records if limit is None else records[:limit]


def taobao_catalog(data_dir: Path, out: Path, *, split: str = "train", limit: int | None = None) -> Path:
    """Write the taobao-ner titles (``train``, ``dev`` or ``all``) as a JSONL catalog at `out`.

    One product per title: id ``taobao-<file>-<n>`` (n = title number in that file, so ids do not depend on
    `split`), title = its characters joined, tags = {"product_type": unique HCCX spans, "brand": unique HPPX
    spans}, both multi-valued; a title without such a span gets an empty list there ("no value applies":
    the annotation covers every title). `limit` keeps the
    first N titles in file order (train before dev for ``all``).
    """
    return _write_jsonl(taobao_records(data_dir, split=split, limit=limit), out)


def taxonomy(data_dir: Path) -> list[tuple[int, list[str]]]:
    """Google's product taxonomy as (category id, path from the root) pairs, in file order."""
    entries = []
    with open(data_dir / "taxonomy" / "google-product-taxonomy.en-US.txt", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            number, _, path = line.partition(" - ")
            entries.append((int(number), [part.strip() for part in path.split(" > ")]))
    return entries


def behaviour_records(data_dir: Path) -> list[dict]:
    """The gift shop's items that have a title, with their median price as an attribute."""
    with open(data_dir / "behaviour" / "items.csv", newline="", encoding="utf-8") as f:
        return [{"id": row["item_id"], "title": row["title"], "attributes": {"price": row["median_price"]}}
                for row in csv.DictReader(f) if row["title"].strip()]


def behaviour_catalog(data_dir: Path, out: Path) -> Path:
    return _write_jsonl(behaviour_records(data_dir), out)


def behaviour_events(data_dir: Path) -> Path:
    return data_dir / "behaviour" / "events.csv.gz"


def main(argv: list[str] | None = None) -> None:
    """``python -m shoptag.pipeline.datasets fashion|taobao|behaviour --out FILE``: write a public data set as a catalog."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("dataset", choices=("fashion", "taobao", "behaviour"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--limit", type=int, default=None, help="first N products in file order")
    parser.add_argument("--images", action="store_true", help="fashion: extract photos next to the catalog")
    parser.add_argument("--split", default="all", choices=("train", "dev", "all"), help="taobao: which file(s)")
    args = parser.parse_args(argv)
    if args.dataset == "fashion":
        image_dir = args.out.parent / "images" if args.images else None
        path = fashion_catalog(args.data_dir, args.out, limit=args.limit, images=args.images, image_dir=image_dir)
    elif args.dataset == "behaviour":
        path = behaviour_catalog(args.data_dir, args.out)
        print(behaviour_events(args.data_dir))
    else:
        path = taobao_catalog(args.data_dir, args.out, split=args.split, limit=args.limit)
    print(path)


if __name__ == "__main__":
    main()
