"""Stage: store → search backend. A full reindex rebuilds the index beside the live one and swaps; an
incremental one sends only products whose document changed since the backend last received it.

What a document holds apart from its vectors (content, tags with scores, the models behind the vectors) is
hashed from the store alone, so an incremental run finds the changed products without loading a vector,
and encodes (through the cache) and builds documents for those only. The store numbers every change to a
product (SQLite triggers); a run records the number it is complete up to, so the next incremental run hashes
only the products changed since, not the whole catalog, and deletes from the backend the ones that are gone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence

from shoptag.core.settings import Settings
from shoptag.indexer.backend import SearchBackend
from shoptag.indexer.documents import SearchDoc
from shoptag.store.records import Store, StoredProduct

from .encode import Encoders, encode_products
from .progress import progress_bar
from .search_docs import search_docs
from .search_sync import backend_key, doc_hashes, es_key, open_search
from .workspace import Workspace

BATCH = 2000

log = logging.getLogger("shoptag.reindex")


def rollback(settings: Settings, store: Store) -> tuple[str, str]:
    """Elasticsearch: move the alias back to the index the last full reindex replaced; (from, to). The store's
    record of what was sent no longer holds, so the next incremental reindex compares every product."""
    from shoptag.indexer.es.client import connect, unavailable_as_error
    from shoptag.indexer.es.reindex import rollback as swap_back

    with unavailable_as_error(settings.es.url or ""):
        client = connect(settings.es)
        try:
            moved = swap_back(client, settings.es)
        finally:
            client.close()
    store.set_indexed(es_key(settings), {}, replace_all=True, mark=(0, ""))
    return moved


def build_docs(
    store: Store, products: Sequence[StoredProduct], encoders: Encoders, settings: Settings,
    tags: Mapping[str, Mapping[str, Sequence[tuple[str, str, float]]]], show_progress: bool,
) -> Iterator[SearchDoc]:
    """Documents for `products`, a batch at a time (vectors from the embedding cache, encoding only what it
    lacks), so a reindex holds one batch of vectors at a time whatever the catalog's size."""
    cache = Workspace(settings.workspace).open_cache()
    try:
        with progress_bar("build documents", len(products), show_progress) as advance:
            for start in range(0, len(products), BATCH):
                batch = products[start : start + BATCH]
                vectors, _ = encode_products(batch, encoders, cache, show_progress=False)
                yield from search_docs(store, batch, vectors, encoders.ids(), tags)
                advance(len(batch))
    finally:
        cache.close()


DocBuilder = Callable[
    [Store, Sequence[StoredProduct], Encoders, Settings, Mapping[str, Mapping[str, Sequence[tuple[str, str, float]]]], bool],
    Iterator[SearchDoc],
]


def reindex(
    settings: Settings, store: Store, encoders: Encoders, backend: SearchBackend, *,
    incremental: bool = False, show_progress: bool = True, builder: DocBuilder = build_docs,
) -> dict:
    """Send every product (or, incrementally, the changed ones) to the backend and delete the ones gone from
    the store; record what it now holds. `builder` makes the documents (the Ray engine encodes on a cluster)."""
    key = backend_key(settings, backend)
    seq = store.change_seq()  # first: what changes while this runs is left for the next run
    model_ids = encoders.ids()
    models = json.dumps(model_ids, sort_keys=True, default=str)
    mark = store.index_mark(key) if incremental else None
    if mark is not None and mark[1] == models:
        candidates = store.changed_since(mark[0], key)
        products = store.products(candidates)
        tags = store.effective_tags([p.id for p in products])
    else:  # first run, or other encoders: every product is a candidate
        products = store.products()
        tags = store.effective_tags()
        candidates = None
    popularity = store.popularity([p.id for p in products])
    hashes = doc_hashes(products, tags, popularity, model_ids)
    gone: list[str] = []
    if incremental:  # what the backend holds of the candidates: changed documents are sent, vanished ones deleted
        previous = store.indexed_hashes(key, candidates)
        gone = [pid for pid in previous if pid not in hashes]
        products = [p for p in products if previous.get(p.id) != hashes[p.id]]
    report = backend.reindex(builder(store, products, encoders, settings, tags, show_progress), incremental=incremental)
    failed = {pid for pid, _ in report.failed}
    if not incremental and failed:
        return {"sent": len(products), "written": report.written, "deleted": 0, "failed": report.failed,
                "swapped": False}
    deleted = backend.delete(gone).deleted if gone else 0
    store.set_indexed(
        key, {p.id: hashes[p.id] for p in products if p.id not in failed}, replace_all=not incremental, gone=gone,
        mark=None if failed else (seq, models),  # failed products stay after the mark: the next run retries them
        seq=seq,
    )
    return {"sent": len(products), "written": report.written, "deleted": deleted, "failed": report.failed,
            "swapped": not incremental}


def popularity_to_search(settings: Settings, store: Store, encoders: Encoders) -> int | None:
    """After new events changed products' popularity: send those documents to the search index, so that the
    popularity sort sees them now and no later `tag` finds them stale. None when no index was built yet (its
    first reindex takes popularity along)."""
    key = es_key(settings) if settings.backend == "es" else "embedded"
    if store.index_mark(key) is None:
        return None
    backend = open_search(settings, encoders)
    try:
        return reindex(settings, store, encoders, backend, incremental=True, show_progress=False)["sent"]
    finally:
        backend.close()


def converge(settings: Settings, store: Store, encoders: Encoders, backend: SearchBackend,
             builder: DocBuilder = build_docs) -> dict:
    """Send the backend what it lacks after whatever happened before (a killed `tag`, a full disk, a failed
    write): first incrementally, by the document hashes the store recorded; then, should the backend still
    count other products than the store (its files were replaced or lost), by a full rebuild."""
    report = reindex(settings, store, encoders, backend, incremental=True, show_progress=False, builder=builder)
    held, stored = backend.count(), store.count_products()
    if held != stored:
        log.warning("search index holds %d products, the store %d: rebuilding it from the store", held, stored)
        report = reindex(settings, store, encoders, backend, show_progress=False, builder=builder)
    return report
