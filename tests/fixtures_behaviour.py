"""Fixtures: a slice of the real shopper behaviour data (UCI Online Retail II) and a workspace holding it.

Tests that use them skip with a clear message when the data directory is absent.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from pathlib import Path

import pytest

from shoptag.core.settings import load_settings
from shoptag.pipeline.datasets import behaviour_catalog, behaviour_events, default_data_dir
from shoptag.pipeline.ingest import ingest
from shoptag.pipeline.workspace import Workspace

BEHAVIOUR_SLICE_LINES = 8000


@dataclass(frozen=True)
class BehaviourSlice:
    catalog: Path
    events: Path  # the first lines of events.csv.gz, as CSV with the source's column names
    rows: list[dict]  # those lines as read by csv (row i is line i + 2 of the file)
    catalog_ids: set[str]


@pytest.fixture(scope="session")
def behaviour_slice(tmp_path_factory: pytest.TempPathFactory) -> BehaviourSlice:
    source = behaviour_events(default_data_dir())
    if not source.is_file():
        pytest.skip(f"behaviour data not found at {source.resolve()} (set SHOPTAG_DATA_DIR or check out "
                    "../shared/data)")
    folder = tmp_path_factory.mktemp("behaviour")
    catalog = behaviour_catalog(default_data_dir(), folder / "items.jsonl")
    with gzip.open(source, "rt", encoding="utf-8", newline="") as f:
        lines = [next(f) for _ in range(BEHAVIOUR_SLICE_LINES + 1)]
    events = folder / "events.csv"
    events.write_text("".join(lines), encoding="utf-8")
    rows = list(csv.DictReader(lines))
    ids = {line.split('"id": "', 1)[1].split('"', 1)[0] for line in catalog.read_text(encoding="utf-8").splitlines()}
    return BehaviourSlice(catalog, events, rows, ids)


@pytest.fixture()
def behaviour_workspace(behaviour_slice: BehaviourSlice, tmp_path: Path):
    """Settings and an open store with the slice's catalog ingested (no events yet)."""
    settings = load_settings(None, workspace=tmp_path / "ws")
    store = Workspace(settings.workspace).open_store()
    ingest(settings, store, behaviour_slice.catalog, show_progress=False)
    yield settings, store
    store.close()
