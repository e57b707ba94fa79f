"""Choosing the search backend from settings: Elasticsearch when a URL is set, the embedded store otherwise."""

from __future__ import annotations

from shoptag.core.settings import Settings
from .backend import SearchBackend
from .embedded_search import EmbeddedBackend
from .search_common import VectorDims


def open_backend(settings: Settings, dims: VectorDims) -> SearchBackend:
    """The configured backend; for Elasticsearch this checks the cluster answers (`BackendUnavailable` if not)."""
    if settings.backend == "es":
        from .es.backend import ESBackend  # the client is an optional dependency (`shoptag[es]`)

        return ESBackend(settings.es, dims, numeric=settings.catalog.numeric_attributes)
    return EmbeddedBackend(settings.workspace / "search", dims, factory=settings.index.factory,
                           numeric=settings.catalog.numeric_attributes)
