"""Fixtures: small catalogs cut from the real public data (../shared/data or $SHOPTAG_DATA_DIR).

Tests that use them skip with a clear message when the data directory is absent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from shoptag.pipeline.datasets import default_data_dir, fashion_catalog, taobao_catalog

FASHION_SLICE_ROWS = 2000
TAOBAO_SLICE_TITLES = 500


@dataclass(frozen=True)
class CatalogSlice:
    """A catalog file written by `shoptag.pipeline.datasets` and its records as read back."""

    path: Path
    records: list[dict]

    def family(self, name: str) -> tuple[list[str], list[str], list[list[str]]]:
        """(ids, titles, tag lists) of the products that carry family `name`."""
        rows = [r for r in self.records if name in r.get("tags", {})]
        return [r["id"] for r in rows], [r.get("title", "") for r in rows], [r["tags"][name] for r in rows]


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data directory; skips the test when it is absent."""
    path = default_data_dir()
    if not (path / "fashion" / "products.csv").is_file() or not (path / "taobao-ner" / "train.txt").is_file():
        pytest.skip(f"real data not found at {path.resolve()} (set SHOPTAG_DATA_DIR or check out ../shared/data)")
    return path


@pytest.fixture(scope="session")
def fashion_slice(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> CatalogSlice:
    """The first 2,000 fashion products (file order) as a JSONL catalog, no images."""
    path = fashion_catalog(data_dir, tmp_path_factory.mktemp("fashion") / "catalog.jsonl", limit=FASHION_SLICE_ROWS)
    return CatalogSlice(path, _read_jsonl(path))


@pytest.fixture(scope="session")
def taobao_slice(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> CatalogSlice:
    """The first 500 taobao-ner training titles as a JSONL catalog (product_type and brand families)."""
    path = taobao_catalog(
        data_dir, tmp_path_factory.mktemp("taobao") / "catalog.jsonl", split="train", limit=TAOBAO_SLICE_TITLES
    )
    return CatalogSlice(path, _read_jsonl(path))
