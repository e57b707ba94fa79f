"""Stage: store → search backend. A full reindex rebuilds the index beside the live one and swaps; an
incremental one sends only products whose document changed since the backend last received it."""

from __future__ import annotations

import hashlib
import json

from shoptag.indexer.backend import SearchBackend
from shoptag.indexer.documents import SearchDoc
from shoptag.indexer.store import Store

from .encode import Encoders, encode_products
from .progress import progress_bar
from .search_docs import search_docs
from .settings import Settings
from .workspace import Workspace

BATCH = 2000


def doc_hash(doc: SearchDoc) -> str:
    """What makes a document differ: content, tags with scores, and the models behind its vectors."""
    tags = {f: sorted((t.value, round(t.score, 4), t.source) for t in ts) for f, ts in doc.tags.items()}
    key = json.dumps([doc.content_hash, tags, doc.text_model, doc.image_model], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(key.encode()).hexdigest()


def backend_key(settings: Settings, backend: SearchBackend) -> str:
    return f"es:{settings.es.url}:{settings.es.index_alias}" if backend.name == "es" else "embedded"


def reindex(
    settings: Settings, store: Store, encoders: Encoders, backend: SearchBackend, *,
    incremental: bool = False, show_progress: bool = True,
) -> dict:
    """Build documents for every product (vectors from the cache) and hand them to the backend."""
    products = store.products()
    cache = Workspace(settings.workspace).open_cache()
    docs: list[SearchDoc] = []
    try:
        with progress_bar("build documents", len(products), show_progress) as advance:
            for start in range(0, len(products), BATCH):
                batch = products[start : start + BATCH]
                vectors, _ = encode_products(batch, encoders, cache, show_progress=False)
                docs += search_docs(store, batch, vectors, encoders.ids())
                advance(len(batch))
    finally:
        cache.close()
    key = backend_key(settings, backend)
    hashes = {d.id: doc_hash(d) for d in docs}
    if incremental:
        previous = store.indexed_hashes(key)
        docs = [d for d in docs if previous.get(d.id) != hashes[d.id]]
    report = backend.reindex(docs, incremental=incremental)
    failed = {pid for pid, _ in report.failed}
    if not incremental and failed:
        return {"sent": len(docs), "written": report.written, "failed": report.failed, "swapped": False}
    store.set_indexed(key, {d.id: hashes[d.id] for d in docs if d.id not in failed}, replace_all=not incremental)
    return {"sent": len(docs), "written": report.written, "failed": report.failed, "swapped": not incremental}
