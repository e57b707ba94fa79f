"""The one interface both search backends implement; the pipeline, CLI and service only see this."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from .documents import Hit, SearchDoc, SearchQuery, SearchResults, WriteReport


@runtime_checkable
class SearchBackend(Protocol):
    """Storefront search (hybrid BM25 + kNN, tag filters, facets) and "similar products"."""

    name: str

    def upsert(self, docs: Iterable[SearchDoc]) -> WriteReport:
        """Add or replace documents in the live index."""
        ...

    def delete(self, ids: Sequence[str]) -> WriteReport:
        """Remove documents from the live index; unknown ids are not an error."""
        ...

    def reindex(self, docs: Iterable[SearchDoc], *, incremental: bool = False) -> WriteReport:
        """Rebuild the index from `docs`; the live index stays searchable and complete throughout.

        With `incremental`, `docs` holds only changed products and the live index is updated in place.
        """
        ...

    def search(self, query: SearchQuery) -> SearchResults: ...

    def similar(self, product_id: str, k: int = 10, filters: dict[str, list[str]] | None = None) -> list[Hit]:
        """Nearest products by fused vector, never the product itself; `NotFound` for an unknown product."""
        ...

    def count(self) -> int: ...

    def index_version(self) -> str:
        """Names the current build of the index; a full reindex changes it (cursors of another are refused)."""
        ...

    def vectors(self, ids: list[str]) -> np.ndarray:
        """Fused vectors of `ids`, one row each (zeros for a product without one): for diversity re-ranks."""
        ...

    def close(self) -> None: ...
