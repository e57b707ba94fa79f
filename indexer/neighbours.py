"""Similar products from FAISS beside Elasticsearch: the fused vectors of the products behind the alias, kept in
step by the Elasticsearch backend's own writes (upserts and deletes log their vectors here once the cluster
accepted them; a full reindex builds a new snapshot while it streams and makes it live only after the alias
moved).

Storage is the embedded backend's (`vector_log`: FAISS snapshots plus a change log in SQLite), so `similar`
answers the same way in both setups and never depends on a server returning vectors (Elasticsearch 9.2+
leaves them out of `_source`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from shoptag.core.errors import Corrupt
from shoptag.core.settings import IndexSettings

from . import vector_log
from .search_common import VectorDims
from .vector_log import VectorLog, Vectors


class Neighbours:
    """The fused vectors of an Elasticsearch index in FAISS, in `directory` (one per cluster and alias)."""

    def __init__(self, directory: Path, dims: VectorDims, index: IndexSettings = IndexSettings()) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._db = self.directory / "neighbours.sqlite"
        self._log = VectorLog(self.directory, dims, index)
        self._lock = threading.Lock()  # FAISS indexes are not safe to read while they change
        self._writer = sqlite3.connect(self._db, isolation_level=None, check_same_thread=False)
        try:
            self._writer.execute("PRAGMA journal_mode = WAL")
            self._writer.executescript(vector_log.SCHEMA)
            self._vectors = self._log.fresh(self._log.empty(), self._writer)
        except (sqlite3.DatabaseError, Corrupt) as exc:
            self._writer.close()
            raise Corrupt(f"{self._db}: damaged similar-products index ({exc}); delete the folder and run "
                          "`shoptag reindex`") from None

    def log(self, changes: Sequence[tuple[str, np.ndarray | None]]) -> None:
        """Products' new fused vectors (None: deleted, or without one), in one short transaction."""
        if not changes:
            return
        with self._transaction() as vectors:
            fitting = _fitting(changes, vectors.fused.dim)
            self._log.log(self._writer, vectors, [(pid, None, fused) for pid, fused in fitting])

    def staged(self) -> Vectors:
        """Empty indexes a full reindex fills (`add`) beside the live ones, and `replace` makes live."""
        return self._log.empty()

    @staticmethod
    def add(staged: Vectors, changes: Sequence[tuple[str, np.ndarray | None]]) -> None:
        """Add products' fused vectors to `staged` (one of the wrong size is left out: the cluster rejects it)."""
        kept = {pid: vector for pid, vector in _fitting(changes, staged.fused.dim) if vector is not None}
        if kept:
            staged.fused.add(list(kept), np.vstack([np.asarray(v, dtype=np.float32) for v in kept.values()]))

    def replace(self, staged: Vectors) -> None:
        """Make `staged` the live indexes: saved as the next snapshot, which supersedes the whole log."""
        with self._transaction(staged) as _:
            pass

    def nearest(self, product_id: str, fetch: int) -> list[tuple[str, float]] | None:
        """The `fetch` nearest products to `product_id` by fused vector, best first, never itself; None when
        the product has no vector here (unknown to this index, or an index filled from elsewhere)."""
        with self._read() as vectors:
            if product_id not in vectors.fused:
                return None
            vector = vectors.fused.vector(product_id)
            ids, sims = vectors.fused.search(vector[None, :], min(fetch, len(vectors.fused)), exclude=[product_id])
        return [(pid, float(sim)) for pid, sim in zip(ids[0], sims[0]) if pid is not None]

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The fused vectors this index holds of `ids`."""
        with self._read() as vectors:
            return {pid: vectors.fused.vector(pid) for pid in ids if pid in vectors.fused}

    def close(self) -> None:
        self._writer.close()

    @contextmanager
    def _read(self) -> Iterator[Vectors]:
        """The indexes as one SQLite read transaction sees them (another process's writes included)."""
        conn = sqlite3.connect(f"file:{self._db}?mode=ro", uri=True, isolation_level=None)
        try:
            conn.execute("BEGIN")
            with self._lock:
                self._vectors = self._log.fresh(self._vectors, conn)
                yield self._vectors
        finally:
            conn.close()

    @contextmanager
    def _transaction(self, staged: Vectors | None = None) -> Iterator[Vectors]:
        """One write transaction: the live indexes to log changes into, or `staged` to save as a snapshot."""
        self._writer.execute("BEGIN IMMEDIATE")
        try:
            with self._lock:
                if staged is None:
                    vectors = self._vectors = self._log.fresh(self._vectors, self._writer)
                else:
                    vectors = staged
                    vectors.seq = self._log.last_seq(self._writer)
                yield vectors
                self._log.commit(self._writer, vectors, snapshot=staged is not None)
                self._writer.execute("COMMIT")
                self._vectors = vectors
        except BaseException:
            if self._writer.in_transaction:
                self._writer.execute("ROLLBACK")
            self._log.discard_next(self._writer)
            with self._lock:
                self._vectors = self._log.fresh(self._log.empty(), self._writer)
            raise
        self._log.drop_old(vectors)


def _fitting(changes: Sequence[tuple[str, np.ndarray | None]], dim: int) -> list[tuple[str, np.ndarray | None]]:
    """`changes` with a vector of another size than `dim` read as no vector."""
    return [(pid, vector if vector is not None and np.shape(vector) == (dim,) else None) for pid, vector in changes]
