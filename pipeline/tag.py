"""Stage: products → model tags with scores and evidence in the store (and the search backend kept in step).

A product is (re)tagged when its content or the model changed since it was last tagged, so an interrupted
run resumes where it stopped and a second run right after the first does nothing. The store commits a batch
before the search backend receives it, so a crash (or a full disk) between the two leaves the backend behind:
each batch records the document hashes the backend received, and every run ends by sending what the backend
lacks (`converge`), so the next run repairs what an interrupted one left out.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from shoptag.core.errors import Conflict
from shoptag.core.settings import IndexSettings, Settings
from shoptag.indexer.backend import SearchBackend
from shoptag.store.records import Store, StoredProduct
from shoptag.tagger.embedding_cache import EmbeddingCache
from shoptag.tagger.model import TagDecision, TaggerModel, current_name, decide, load_model, score_sources
from shoptag.vectors.faiss_index import search_threads

from .encode import Encoders, ProductVectors, encode_ahead, encode_products
from .progress import progress_bar
from .reindex import backend_key, converge
from .search_sync import index_products
from .tag_system import TagSystem, apply_tag_system, load_tag_system
from .workspace import Workspace

BATCH = 1000
T = TypeVar("T")


class StaleModelError(Conflict):
    """The saved model was trained on vectors of other encoders than the settings name."""


@dataclass
class TagReport:
    tagged: int = 0
    skipped_up_to_date: int = 0
    accepted: int = 0
    review: int = 0
    search_repaired: int = 0  # products the search backend lacked (an earlier run was interrupted) and received now
    by_family: dict[str, dict[str, int]] = field(default_factory=dict)


def model_version(model: TaggerModel | None, system: TagSystem | None = None) -> str:
    """What a product's tags were made with: the model, and the tag system when there is one."""
    version = f"{model.created_at:.6f}" if model is not None else "zero-shot"
    return version if system is None else f"{version}+{system.created_at:.6f}"


def load_checked_model(models_dir: Path, encoders: Encoders, index: IndexSettings) -> TaggerModel:
    """The current model searching as `index` says, refusing one trained with other encoders (its vectors would
    not compare)."""
    model = load_model(models_dir, index=index)
    if model.encoders != encoders.ids():
        raise StaleModelError(
            f"the model was trained with encoders {model.encoders}, the settings give {encoders.ids()}: "
            "run `shoptag train` again"
        )
    return model


def load_tagging(models_dir: Path, encoders: Encoders, index: IndexSettings) -> tuple[TaggerModel | None, TagSystem | None]:
    """The learnt model and the tag system (zero-shot tags, hierarchy, rules); either may be absent, not both."""
    system = load_tag_system(models_dir)
    if system is not None and system.encoders != encoders.ids():
        raise StaleModelError(
            f"the zero-shot tags were encoded with {system.encoders}, the settings give {encoders.ids()}: "
            "run `shoptag train` again"
        )
    if system is not None and current_name(models_dir) is None:
        return None, system
    return load_checked_model(models_dir, encoders, index), system


def score_batch(
    model: TaggerModel | None, store: Store, encoders: Encoders, cache: EmbeddingCache, products: Sequence[StoredProduct],
    system: TagSystem | None = None,
) -> tuple[dict[str, list[TagDecision]], ProductVectors]:
    """The decisions for `products` and their vectors, writing nothing but the embedding cache: the part of
    tagging that any number of processes may run side by side (the Ray engine's workers do)."""
    vectors, _ = encode_products(products, encoders, cache, show_progress=False)
    scores = score_sources(model, vectors.fused, [p.text for p in products], [p.id for p in products]) if model else {}
    decisions: dict[str, list[TagDecision]] = {p.id: [] for p in products}
    if model:
        # families people tagged get no evidence (they are not written); a tag system still weighs their decisions
        people = store.people_families([p.id for p in products])
        decided = decide(
            model, scores, [vectors.modality(row) for row in range(len(products))],
            [people.get(p.id, ()) for p in products], decide_skipped=system is not None,
        )
        decisions = {p.id: d for p, d in zip(products, decided)}
    if system is not None:
        human = {
            pid: {f: [v for v, source, _ in values] for f, values in families.items() if values and values[0][1] != "model"}
            for pid, families in store.effective_tags([p.id for p in products]).items()
        }
        decisions = apply_tag_system(system, model, scores, decisions, products, vectors, human)
    return decisions, vectors


def write_batch(
    store: Store, encoders: Encoders, products: Sequence[StoredProduct], decisions: dict[str, list[TagDecision]],
    vectors: ProductVectors, version: str, backend: SearchBackend | None = None, index_key: str | None = None,
) -> dict[str, list[TagDecision]]:
    """Write scored `products`: tags (never over people's tags) and their tagged hash in one transaction,
    then search and, with `index_key`, what the backend received. Returns the decisions written: families
    people tagged keep their tags and are left out."""
    with store.transaction() as db:
        written = store.set_model_tags(db, {
            p.id: ([(d.family, d.value, d.status, d.score, d.evidence) for d in decisions[p.id]],
                   f"{p.content_hash}@{version}")
            for p in products
        })
    decisions = {p.id: [d for d in decisions[p.id] if d.family in written[p.id]] for p in products}
    if backend is not None:
        index_products(store, backend, products, vectors, encoders.ids(), index_key)
    return decisions


def tag_batch(
    model: TaggerModel | None, store: Store, encoders: Encoders, cache: EmbeddingCache, products: Sequence[StoredProduct],
    backend: SearchBackend | None = None, index_key: str | None = None, system: TagSystem | None = None,
) -> dict[str, list[TagDecision]]:
    """Tag `products` now: score, decide, apply the tag system, write (see `write_batch`)."""
    decisions, vectors = score_batch(model, store, encoders, cache, products, system)
    return write_batch(store, encoders, products, decisions, vectors, model_version(model, system), backend, index_key)


def count_decisions(report: TagReport, decisions: dict[str, list[TagDecision]], tagged: int) -> None:
    """Add a written batch to the run's counts."""
    for ds in decisions.values():
        for d in ds:
            counts = report.by_family.setdefault(d.family, {"accepted": 0, "review": 0})
            counts[d.status] += 1
    report.tagged += tagged


def _count(report: TagReport, written: Future, advance: Callable[[int], None]) -> None:
    """Wait for a batch's write and add it to the run's counts."""
    decisions = written.result()
    count_decisions(report, decisions, len(decisions))
    advance(len(decisions))


def _rebatch(groups: Iterable[list[T]], size: int) -> Iterator[list[T]]:
    """The items of `groups` cut again into lists of `size` (the last one may be shorter)."""
    buffer: list[T] = []
    for group in groups:
        buffer.extend(group)
        while len(buffer) >= size:
            yield buffer[:size]
            buffer = buffer[size:]
    if buffer:
        yield buffer


def finish_report(report: TagReport) -> TagReport:
    """The run's totals over its families."""
    report.accepted = sum(c["accepted"] for c in report.by_family.values())
    report.review = sum(c["review"] for c in report.by_family.values())
    return report


def tag(
    settings: Settings, store: Store, encoders: Encoders, backend: SearchBackend | None = None, *,
    retag_all: bool = False, show_progress: bool = True,
) -> TagReport:
    workspace = Workspace(settings.workspace)
    model, system = load_tagging(workspace.models_dir, encoders, settings.index)
    version = model_version(model, system)
    products = store.products()
    current = store.tagged_hashes()
    todo = [p for p in products if retag_all or current.get(p.id) != f"{p.content_hash}@{version}"]
    report = TagReport(skipped_up_to_date=len(products) - len(todo))
    key = backend_key(settings, backend) if backend is not None else None
    cache = workspace.open_cache()
    # the catalog and the model are loaded and stay: frozen, the collector stops re-scanning them each time a
    # batch's many small objects (decisions, evidence, documents) trigger it
    gc.freeze()
    try:
        # three stages at once: the encoder fills the cache in the background (the products it has vectors
        # for are scored first); a batch is scored while the one before is written (store, then search:
        # scoring needs nothing the writes change), one write in flight, in batch order; the kNN search
        # keeps to one thread (with two, each waits on the other at every barrier while the cores are shared)
        with progress_bar("tag", len(todo), show_progress) as advance, ThreadPoolExecutor(1) as writer, \
                search_threads(1), closing(encode_ahead(todo, encoders, workspace.open_cache)) as ready:
            pending: Future | None = None
            for batch in _rebatch(ready, BATCH):
                decisions, vectors = score_batch(model, store, encoders, cache, batch, system)
                if pending is not None:
                    _count(report, pending, advance)
                pending = writer.submit(write_batch, store, encoders, batch, decisions, vectors, version, backend, key)
            if pending is not None:
                _count(report, pending, advance)
    finally:
        gc.unfreeze()
        cache.close()
    if backend is not None:
        report.search_repaired = converge(settings, store, encoders, backend)["sent"]
    return finish_report(report)
