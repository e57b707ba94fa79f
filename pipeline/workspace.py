"""The workspace folder: everything a run makes lives here, so a run is reproducible and movable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shoptag.store.records import Store
from shoptag.tagger.embedding_cache import EmbeddingCache


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / "shoptag.db"

    @property
    def cache_path(self) -> Path:
        return self.root / "embeddings.db"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def cache_dir(self) -> Path:
        """Caches a run may rebuild: the ONNX export of the text encoder, jieba's dictionary."""
        return self.root / "cache"

    @property
    def rejects_dir(self) -> Path:
        return self.root / "rejects"

    @property
    def search_dir(self) -> Path:
        return self.root / "search"

    @property
    def events_path(self) -> Path:
        return self.root / "events.db"

    @property
    def events_salt_path(self) -> Path:
        """The key that pseudonymises user ids; kept apart from the events so a copy of them cannot be re-keyed."""
        return self.root / "events.salt"

    @property
    def recs_path(self) -> Path:
        return self.root / "behaviour" / "recs.npz"

    def open_store(self) -> Store:
        return Store(self.db_path)

    def open_cache(self) -> EmbeddingCache:
        return EmbeddingCache(self.cache_path)
