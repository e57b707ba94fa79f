"""The search backend as the CLI and the service both keep it: the one the settings choose, sized for the
encoders, with its documents kept in step with the store."""

from __future__ import annotations

from collections.abc import Sequence

from shoptag.core.errors import Conflict
from shoptag.core.settings import Settings
from shoptag.indexer.backend import SearchBackend
from shoptag.indexer.backends import open_backend
from shoptag.indexer.documents import SearchDoc
from shoptag.store.records import Store, StoredProduct
from shoptag.tagger.embedding_cache import EmbeddingCache

from .encode import Encoders, ProductVectors, encode_products
from .search_docs import search_docs
from .workspace import Workspace


def open_search(settings: Settings, encoders: Encoders, *, set_aside_damaged: bool = False) -> SearchBackend:
    """The backend the settings choose (Elasticsearch when `es.url` is set, else embedded), sized for the
    encoders' vectors; `set_aside_damaged` for the commands that rebuild a damaged index (`open_backend`)."""
    return open_backend(settings, encoders.dims(), set_aside_damaged=set_aside_damaged)


def index_products(store: Store, backend: SearchBackend, products: Sequence[StoredProduct], vectors: ProductVectors,
                   encoder_ids: dict[str, object]) -> list[SearchDoc]:
    """Upsert the search documents of `products` and return them; `Conflict` when the backend rejects any
    (e.g. vectors of other dimensions than the index: reindex)."""
    docs = search_docs(store, products, vectors, encoder_ids)
    report = backend.upsert(docs)
    if report.failed:
        raise Conflict(f"search index rejected {len(report.failed)} documents: {report.failed[:3]}; "
                       "run `shoptag reindex`")
    return docs


def sync_search(store: Store, encoders: Encoders, cache: EmbeddingCache, backend: SearchBackend,
                ids: Sequence[str]) -> None:
    """Send the store's current state of `ids` to the search backend: upsert those it has, delete the rest."""
    products = store.products(list(ids))
    if products:
        vectors, _ = encode_products(products, encoders, cache, show_progress=False)
        index_products(store, backend, products, vectors, encoders.ids())
    gone = sorted(set(ids) - {p.id for p in products})
    if gone:
        backend.delete(gone)


def sync_products(settings: Settings, store: Store, ids: Sequence[str]) -> None:
    """`sync_search` for a one-off run: opens the encoders, cache and backend only when there is work."""
    if not ids:
        return
    workspace = Workspace(settings.workspace)
    encoders = Encoders(settings.encoders, workspace.cache_dir)
    cache = workspace.open_cache()
    backend = open_search(settings, encoders)
    try:
        sync_search(store, encoders, cache, backend, ids)
    finally:
        backend.close()
        cache.close()
