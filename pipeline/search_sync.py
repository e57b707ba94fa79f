"""The search backend as the CLI and the service both keep it: the one the settings choose, sized for the
encoders, with its documents kept in step with the store."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from shoptag.core.errors import Conflict
from shoptag.core.settings import Settings
from shoptag.indexer.backend import SearchBackend
from shoptag.indexer.backends import open_backend
from shoptag.indexer.documents import DocTag, SearchDoc
from shoptag.store.records import Store, StoredProduct
from shoptag.tagger.embedding_cache import EmbeddingCache

from .encode import Encoders, ProductVectors, encode_products
from .search_docs import doc_tags, search_docs
from .workspace import Workspace


def open_search(settings: Settings, encoders: Encoders, *, set_aside_damaged: bool = False,
                set_aside_other_encoders: bool = False) -> SearchBackend:
    """The backend the settings choose (Elasticsearch when `es.url` is set, else embedded), sized for the
    encoders' vectors; `set_aside_*` for the commands that rebuild such an index (`open_backend`)."""
    return open_backend(settings, encoders.dims(), set_aside_damaged=set_aside_damaged,
                        set_aside_other_encoders=set_aside_other_encoders)


def doc_hash(content_hash: str, tags: Mapping[str, Sequence[DocTag]], model_ids: Mapping,
             popularity: float | None = None) -> str:
    """What makes a product's document differ: content, winning tags with scores (as `doc_tags` gives them),
    the encoders' ids, and its popularity from shopper events."""
    families = {f: sorted((t.value, round(t.score, 4), t.source) for t in ts) for f, ts in tags.items()}
    key = [content_hash, families, str(model_ids.get("text_model") or ""), str(model_ids.get("image_model") or "")]
    if popularity is not None:
        key.append(popularity)
    return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def doc_hashes(products: Sequence[StoredProduct], tags: Mapping[str, Mapping[str, Sequence[tuple[str, str, float]]]],
               popularity: Mapping[str, float], model_ids: Mapping) -> dict[str, str]:
    """`doc_hash` of each product's document, from the store's winning tags and popularity (no vectors)."""
    return {p.id: doc_hash(p.content_hash, doc_tags(tags.get(p.id, {})), model_ids, popularity.get(p.id))
            for p in products}


def backend_key(settings: Settings, backend: SearchBackend) -> str:
    """Under which name the store records what `backend` holds."""
    return es_key(settings) if backend.name == "elasticsearch" else "embedded"


def es_key(settings: Settings) -> str:
    """The record name of the Elasticsearch index the settings point at (cluster and alias)."""
    return f"es:{settings.es.url}:{settings.es.index_alias}"


def index_products(store: Store, backend: SearchBackend, products: Sequence[StoredProduct], vectors: ProductVectors,
                   encoder_ids: dict[str, object], index_key: str | None = None) -> list[SearchDoc]:
    """Upsert the search documents of `products` and return those sent; `Conflict` when the backend rejects any
    (e.g. vectors of other dimensions than the index: reindex). With `index_key` (`backend_key`), only the
    documents that differ from what the store records the backend holds are sent (a retag that changes
    nothing rewrites no index), and the store records all of them as held, so `converge` and incremental
    reindexes do not look at them again."""
    seq = store.change_seq()  # before the documents are read from the store: later changes go again
    ids = [p.id for p in products]
    tags = store.effective_tags(ids)
    popularity = store.popularity(ids)
    rows = list(range(len(products)))
    hashes: dict[str, str] = {}
    if index_key is not None:
        hashes = doc_hashes(products, tags, popularity, encoder_ids)
        held = store.indexed_hashes(index_key, ids)
        rows = [row for row, pid in enumerate(ids) if held.get(pid) != hashes[pid]]
    docs = search_docs(store, [products[row] for row in rows], vectors.take(rows), encoder_ids, tags, popularity)
    report = backend.upsert(docs) if docs else None
    if report is not None and report.failed:
        raise Conflict(f"search index rejected {len(report.failed)} documents: {report.failed[:3]}; "
                       "run `shoptag reindex`")
    if index_key is not None:
        store.set_indexed(index_key, hashes, seq=seq)
    return docs


def sync_search(store: Store, encoders: Encoders, cache: EmbeddingCache, backend: SearchBackend,
                ids: Sequence[str], index_key: str | None = None) -> None:
    """Send the store's current state of `ids` to the search backend: upsert those it has, delete the rest;
    `index_key`: recorded as sent (`index_products`)."""
    products = store.products(list(ids))
    if products:
        vectors, _ = encode_products(products, encoders, cache, show_progress=False)
        index_products(store, backend, products, vectors, encoders.ids(), index_key)
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
        sync_search(store, encoders, cache, backend, ids, backend_key(settings, backend))
    finally:
        backend.close()
        cache.close()
