"""What a running service holds (store, embedding cache, encoders, tagger model, search backend) and the
write discipline that keeps the store and the search index in step, across crashes too.

Writes are serialised by one lock and bracketed by the write journal. Reads take no lock: the store (SQLite
WAL) and the embedded search backend (SQLite snapshot + versioned FAISS files) both serve the last committed
state, so a read never waits for a write and never sees half of one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from shoptag.core.errors import Conflict
from shoptag.core.settings import Settings
from shoptag.indexer.backend import SearchBackend
from shoptag.pipeline.encode import Encoders, encode_products
from shoptag.pipeline.recommend import RecsCache
from shoptag.pipeline.reindex import converge
from shoptag.pipeline.search_sync import backend_key, open_search, sync_search
from shoptag.pipeline.tag import load_tagging
from shoptag.pipeline.tag_system import TagSystem, tag_system_stamp
from shoptag.pipeline.train import train_if_better
from shoptag.pipeline.workspace import Workspace
from shoptag.store.records import Store
from shoptag.store.review_log import ReviewLog, open_review_log
from shoptag.tagger.embedding_cache import EmbeddingCache
from shoptag.tagger.model import TaggerModel, current_name, learn_labels
from shoptag.tagger.segmenter import configure_segmenter

from .decodes import DecodeGate
from .journal import WriteJournal
from .metrics import ServiceMetrics

log = logging.getLogger("shoptag.service")


@dataclass
class ServiceState:
    settings: Settings
    store: Store
    cache: EmbeddingCache
    encoders: Encoders
    backend: SearchBackend
    journal: WriteJournal
    metrics: ServiceMetrics
    review: ReviewLog
    recs: RecsCache
    decodes: DecodeGate  # images validated at once, across requests
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    _model: TaggerModel | None = None
    _system: TagSystem | None = None
    _loaded: tuple[str | None, int | None] | None = None  # (model pointer, tag system stamp) of what is loaded
    _decided: int = 0  # review decisions since the last scheduled retraining
    _retraining: threading.Thread | None = None

    @classmethod
    def open(cls, settings: Settings, metrics: ServiceMetrics) -> ServiceState:
        """Open everything and repair the search index; the text encoder and the model load here, not at the
        first request."""
        workspace = Workspace(settings.workspace)
        configure_segmenter(workspace.cache_dir)
        encoders = Encoders(settings.encoders, workspace.cache_dir)
        store = workspace.open_store()
        state = cls(settings, store, workspace.open_cache(), encoders, open_search(settings, encoders, set_aside_damaged=True),
                    WriteJournal(workspace.root / "service-pending-writes.json"), metrics, open_review_log(store),
                    RecsCache(settings, store, encoders), DecodeGate(settings.service.max_image_decodes))
        try:
            state.recover()
            with suppress(Conflict):  # none yet, or a stale model: reported by the first POST, not fatal here
                state.tagging()  # loaded now rather than by the first POST
        except BaseException:
            state.close()
            raise
        return state

    def summary(self) -> dict:
        """What this service serves, as `serve` reports it at start: workspace, products stored and indexed, the
        search backend, the current model, whether writes need an API key."""
        return {"workspace": str(self.settings.workspace.resolve()), "products": self.store.count_products(),
                "indexed": self.backend.count(), "backend": self.backend.name, "model": self.model_name(),
                "api_key": self.settings.service.api_key is not None}

    def close(self) -> None:
        self.backend.close()
        self.cache.close()
        self.recs.close()
        self.store.close()

    # ---- model ----------------------------------------------------------------------------------------------
    def model_name(self) -> str | None:
        """The name of the workspace's current model, None before `shoptag train`."""
        return current_name(Workspace(self.settings.workspace).models_dir)

    def tagging(self) -> tuple[TaggerModel | None, TagSystem | None]:
        """The current model and tag system, loaded as `shoptag tag` loads them (`load_tagging`), so products
        posted here get the same zero-shot tags, path-consistent levels and rules as a catalog tagged by the
        CLI. What `train` saves while the service runs is picked up at the next write."""
        models_dir = Workspace(self.settings.workspace).models_dir
        key = (self.model_name(), tag_system_stamp(models_dir))
        if key == (None, None):
            raise Conflict("no trained model in this workspace: run `shoptag train` first")
        if key != self._loaded:
            self._model, self._system = load_tagging(models_dir, self.encoders, self.settings.index)
            self._loaded = key
        return self._model, self._system

    def query_model(self) -> TaggerModel | None:
        """The learnt model for query understanding; None while there is none (or it is stale)."""
        try:
            return self.tagging()[0]
        except Conflict:
            return None

    def learn(self, ids: list[str]) -> None:
        """People's labels of `ids` join the loaded model's kNN vote at once (call inside `writing`)."""
        if self._model is None or self._loaded is None or self.model_name() != self._loaded[0]:
            return  # the next model loaded was trained on them
        products = self.store.products(ids)
        vectors, _ = encode_products(products, self.encoders, self.cache, show_progress=False)
        known = self.store.known_tags([p.id for p in products])
        learn_labels(self._model, [p.id for p in products], vectors.fused, [known.get(p.id, {}) for p in products])

    def decided(self, count: int) -> None:
        """Count review decisions; after `review.retrain_after` of them, `train --if-better` in the background (one
        at a time). A promoted model is used from the next write; `shoptag tag` re-tags the catalog with it."""
        every = self.settings.review.retrain_after
        if not every:
            return
        self._decided += count
        if self._decided >= every and not (self._retraining and self._retraining.is_alive()):
            self._decided = 0
            self._retraining = threading.Thread(target=self._retrain, name="shoptag-retrain", daemon=True)
            self._retraining.start()

    def _retrain(self) -> None:
        store = Workspace(self.settings.workspace).open_store()  # its own connection: reads never wait on ours
        try:
            _, summary = train_if_better(self.settings, store, self.encoders, show_progress=False)
            verdict = "promoted" if summary["guard"]["promoted"] else "kept aside"
            self.metrics.retrains.labels(verdict).inc()
            log.info("scheduled retraining: %s %s %s", summary["model"], verdict, "; ".join(summary["guard"]["reasons"]))
        except Exception:
            self.metrics.retrains.labels("failed").inc()
            log.exception("scheduled retraining failed")
        finally:
            store.close()

    # ---- writes ---------------------------------------------------------------------------------------------
    @contextmanager
    def writing(self, ids: list[str]) -> Iterator[None]:
        """One write at a time, its ids journalled first; a write that fails half-way is repaired at once
        (and, should the process die instead, at the next start)."""
        with self.write_lock:
            if self.journal.pending():  # an earlier repair failed: do it before anything else
                self.repair()
            self.journal.record(ids)
            try:
                yield
            except BaseException:
                try:
                    self.repair()
                except Exception:
                    log.exception("could not re-sync the search index; it is retried at the next write")
                raise
            self.journal.clear()
            self.refresh_sizes()

    def repair(self) -> None:
        """Make the search documents of the journalled ids match the store, then forget them."""
        pending = self.journal.pending()
        log.warning("re-syncing %d products whose write did not finish", len(pending))
        self.sync_search(pending)
        self.journal.clear()

    def sync_search(self, ids: list[str]) -> None:
        """Send the store's current state of `ids` to the search backend: upsert those it has, delete the rest."""
        sync_search(self.store, self.encoders, self.cache, self.backend, ids, backend_key(self.settings, self.backend))

    def recover(self) -> None:
        """At start: finish interrupted writes; send the index what it lacks (a `tag` run that was killed, the
        workspace tagged without a search backend, index files lost: `converge`)."""
        if self.journal.pending():
            self.repair()
        converge(self.settings, self.store, self.encoders, self.backend)
        self.refresh_sizes()

    def refresh_sizes(self) -> None:
        self.metrics.sizes(self.store.count_products(), self.backend.count())
        model = self.recs.peek()
        if model is not None:
            self.metrics.demand(model.demand)
