"""Choosing the search backend from settings: Elasticsearch when a URL is set, the embedded store otherwise."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from shoptag.core.errors import Conflict, Corrupt
from shoptag.core.settings import Settings

from .backend import SearchBackend
from .embedded_search import EmbeddedBackend
from .search_common import VectorDims


log = logging.getLogger("shoptag.search")


def open_backend(settings: Settings, dims: VectorDims, *, set_aside_damaged: bool = False,
                 set_aside_other_encoders: bool = False) -> SearchBackend:
    """The configured backend; for Elasticsearch this checks the cluster answers (`BackendUnavailable` if not).

    A damaged embedded index raises `Corrupt` naming the file; with `set_aside_damaged` (commands that rebuild
    the index anyway: reindex, tag, serve) its folder is renamed aside and an empty index opened, which the
    caller fills from the store. One built for encoders of other sizes raises `Conflict` (the usual cause is
    a missing --config); `set_aside_other_encoders` (reindex: rebuilding for the encoders configured now) sets
    it aside the same way."""
    if settings.backend == "es":
        from .es.backend import ESBackend  # the client is an optional dependency (`shoptag[es]`)

        neighbours = None
        if settings.es.similar == "faiss":
            from .neighbours import Neighbours

            neighbours = Neighbours(neighbours_folder(settings), dims, index=settings.index)
        try:
            return ESBackend(settings.es, dims, numeric=settings.catalog.numeric_attributes, neighbours=neighbours)
        except BaseException:  # the cluster refused or is gone: nothing stays open
            if neighbours is not None:
                neighbours.close()
            raise
    folder = settings.workspace / "search"
    try:
        return EmbeddedBackend(folder, dims, index=settings.index, numeric=settings.catalog.numeric_attributes)
    except (Corrupt, Conflict) as exc:
        if not (set_aside_other_encoders if isinstance(exc, Conflict) else set_aside_damaged):
            raise
        kind = "other-encoders" if isinstance(exc, Conflict) else "damaged"
        aside = folder.with_name(f"search.{kind}-{time.strftime('%Y%m%d-%H%M%S')}")
        folder.rename(aside)
        log.warning("%s; moved to %s, rebuilding it from the store", str(exc).split("; ")[0], aside)
        return EmbeddedBackend(folder, dims, index=settings.index, numeric=settings.catalog.numeric_attributes)


def neighbours_folder(settings: Settings) -> Path:
    """Where the FAISS index serving `similar` for an Elasticsearch alias lives: one per cluster and alias."""
    key = hashlib.sha256(f"{settings.es.url}|{settings.es.index_alias}".encode()).hexdigest()[:12]
    return settings.workspace / "es-neighbours" / f"{settings.es.index_alias}-{key}"
