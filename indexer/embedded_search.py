"""The embedded search backend: the full-text store (`fulltext`: SQLite FTS5 for BM25, tag filters and facets)
and the vector log (`vector_log`: FAISS snapshots + logged changes) in one SQLite database, for kNN and
"similar".

Layout of `directory`: ``search.sqlite`` (WAL) and the vector snapshots ``text.N.faiss`` / ``fused.N.faiss``.
Each write changes rows and logs vectors in one SQLite transaction, so they never drift apart; readers take a
SQLite snapshot and the vector state of that same snapshot.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from shoptag.core.errors import Conflict, Corrupt, NotFound
from shoptag.core.settings import IndexSettings
from shoptag.vectors.faiss_index import VectorIndex

from . import fulltext, vector_log
from .documents import Hit, SearchDoc, SearchQuery, SearchResults, WriteReport
from .search_common import VectorDims, batches, changed_docs, rrf_fuse
from .vector_log import VectorLog, Vectors

BATCH = 500


class EmbeddedBackend:
    """SQLite FTS5 + FAISS implementation of `SearchBackend`, for catalogs without Elasticsearch."""

    name = "embedded"

    def __init__(self, directory: Path, dims: VectorDims, *, index: IndexSettings = IndexSettings(),
                 numeric: Sequence[str] = ()) -> None:
        self.directory = Path(directory)
        self.numeric = tuple(numeric)  # declared numeric attributes: indexed as numbers
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dims = dims
        self._db = self.directory / "search.sqlite"
        self._log = VectorLog(self.directory, dims, index)
        self._write_lock = threading.Lock()  # one writer at a time in this process (SQLite serialises processes)
        self._vector_lock = threading.Lock()  # FAISS indexes are not safe to read while they change
        self._writer = sqlite3.connect(self._db, isolation_level=None, check_same_thread=False)
        try:
            self._writer.execute("PRAGMA journal_mode = WAL")
            # derived from the store: a power cut may lose the last commits (never corrupt the file; a lost
            # snapshot is a `Corrupt` that reindex repairs), and not syncing every commit was 1 s of 20k tags
            self._writer.execute("PRAGMA synchronous = NORMAL")
            self._writer.executescript(fulltext.SCHEMA)
            fulltext.migrate(self._writer)
            self._writer.executescript(vector_log.SCHEMA)
            self._vectors = self._log.fresh(self._log.empty(), self._writer)
            # the one read connection, used under `_vector_lock` (a connection per search cost more than FTS5)
            self._reader = sqlite3.connect(f"file:{self._db}?mode=ro", uri=True, isolation_level=None,
                                           check_same_thread=False)
        except Conflict:  # built for encoders of other sizes (`VectorLog.fresh`): nothing is damaged
            self._writer.close()
            raise
        except (sqlite3.DatabaseError, Corrupt) as exc:
            self._writer.close()
            detail = str(exc) if isinstance(exc, Corrupt) else f"{self._db}: damaged search store ({exc})"
            raise Corrupt(f"{detail}; `shoptag reindex` rebuilds the search index from the store") from None

    # ---- writing --------------------------------------------------------------------------------------------
    def upsert(self, docs: Iterable[SearchDoc]) -> WriteReport:
        """Add or replace `docs` in one transaction; docs whose vectors do not fit are reported, not written."""
        report = WriteReport()
        with self._transaction() as vectors:
            moved = fulltext.write_docs(self._writer, self._fitting(docs, report), self.numeric)
            self._log.log(self._writer, vectors, [(d.id, d.text_vector, d.fused_vector) for d in moved])
        return report

    def delete(self, ids: Sequence[str]) -> WriteReport:
        """Remove products; unknown ids are ignored."""
        report = WriteReport()
        with self._transaction() as vectors:
            gone = [(pid, None, None) for pid in ids if fulltext.delete_doc(self._writer, pid)]
            self._log.log(self._writer, vectors, gone)
            report.deleted = len(gone)
        return report

    def reindex(self, docs: Iterable[SearchDoc], *, incremental: bool = False) -> WriteReport:
        """Full: replace everything in one transaction (all or nothing); incremental: upsert changed docs only."""
        if incremental:
            changed: list[SearchDoc] = []
            for batch in batches(docs, BATCH):
                changed += changed_docs(batch, fulltext.fingerprints(self._writer, [d.id for d in batch]))
            return self.upsert(changed)
        report = WriteReport()
        text: tuple[list[str], list[np.ndarray]] = ([], [])
        fused: tuple[list[str], list[np.ndarray]] = ([], [])
        with self._transaction(rebuild=True) as vectors:
            fulltext.clear(self._writer)
            for batch in batches(docs, BATCH):
                fitting = self._fitting(batch, report)
                fulltext.write_docs(self._writer, fitting, self.numeric)
                for doc in fitting:
                    if doc.text_vector is not None:
                        text[0].append(doc.id)
                        text[1].append(doc.text_vector)
                    if doc.fused_vector is not None:
                        fused[0].append(doc.id)
                        fused[1].append(doc.fused_vector)
            if not report.ok:  # like Elasticsearch: a rejected product keeps the old index live
                report.written = 0
                raise _Abort
            self._log.fill(vectors, text, fused)
        return report

    def _fitting(self, docs: Iterable[SearchDoc], report: WriteReport) -> list[SearchDoc]:
        """The docs whose vectors fit this index, counted as written; the others go to `report.failed`."""
        fitting = []
        for doc in docs:
            reason = self.dims.check(doc)
            if reason is None:
                fitting.append(doc)
            else:
                report.failed.append((doc.id, reason))
        report.written += len(fitting)
        return fitting

    @contextmanager
    def _transaction(self, *, rebuild: bool = False) -> Iterator[Vectors]:
        """One write transaction and the vector indexes to change in it; raising inside rolls both back.

        Upserts change the live FAISS indexes in place (readers wait for the short write) and log the change;
        a rebuild fills new indexes aside, so searches go on against the old ones until the commit.
        """
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                if rebuild:
                    staged = self._log.empty(self._log.version(self._writer), self._log.last_seq(self._writer))
                    yield staged
                else:
                    with self._vector_lock:  # another process may have written since we last looked
                        staged = self._vectors = self._log.fresh(self._vectors, self._writer)
                        yield staged
                self._log.commit(self._writer, staged, snapshot=rebuild)
                self._writer.execute("COMMIT")
            except BaseException as error:
                if self._writer.in_transaction:  # SQLite has already rolled back after a full disk or I/O error
                    self._writer.execute("ROLLBACK")
                self._log.discard_next(self._writer)
                if not rebuild:  # the live indexes hold uncommitted changes: back to what is committed
                    with self._vector_lock:
                        self._vectors = self._log.fresh(self._log.empty(), self._writer)
                if isinstance(error, _Abort):
                    return
                raise
            with self._vector_lock:
                self._vectors = staged
            self._log.drop_old(staged)

    # ---- reading --------------------------------------------------------------------------------------------
    def search(self, query: SearchQuery) -> SearchResults:
        """Hybrid search: FTS5 bm25 list (plus query-tag boosts) and kNN list fused by reciprocal rank fusion,
        with a second kNN list among the products carrying the tags the query names when it names any; a
        single list alone; all filtered products when the query has neither text nor vector. A field sort
        orders the same candidates by price, newest or popularity instead, paged by `after`."""
        with self._snapshot(vectors=query.vector is not None) as (conn, vectors):
            scope = fulltext.Scope.of(query)
            match = fulltext.match_expression(query.text)
            hybrid = match is not None and query.vector is not None
            depth = max(query.window, query.offset + query.size)  # how deep each ranked list goes
            parts: list[tuple[str, list]] = []
            ranked: list[list[tuple[str, float]]] = []
            known_total: int | None = None
            knns: list[list[tuple[str, float]]] = []
            if query.vector is not None and vectors is not None:
                named = [fulltext.Scope.of_knn(query)] if query.vector_filters else []
                cutoff = query.min_similarity
                for knn_scope in [*named, scope]:
                    found = self._knn(conn, vectors.text, query.vector, depth, knn_scope)
                    knns.append([(pid, sim) for pid, sim in found if cutoff is None or sim >= cutoff])
            knn_ids = list(dict.fromkeys(pid for found in knns for pid, _ in found))
            if match is not None:
                parts.append(fulltext.text_candidates(match, scope))
                if query.sort_key is None:
                    top, known_total = fulltext.text_ranked(
                        conn, match, scope, depth if hybrid else query.offset + query.size, query.boosts,
                        query.boost_weight, knn_ids)
                    ranked.append(top)
            if knns:
                parts.append(fulltext.id_candidates(knn_ids))
                ranked += knns
            if not parts:
                parts.append(fulltext.filtered(scope))
            candidates = fulltext.union(parts)
            if query.sort_key is not None or not ranked:
                scored = fulltext.sorted_page(conn, query, candidates)
            else:
                fused = rrf_fuse([[pid for pid, _ in r] for r in ranked], query.rank_constant) if len(ranked) > 1 \
                    else ranked[0]
                scored = [(pid, score, ()) for pid, score in fused[query.offset : query.offset + query.size]]
            return SearchResults(
                hits=fulltext.hits(conn, scored),
                total=fulltext.total(conn, candidates) if known_total is None else known_total,
                facets={f: fulltext.value_counts(conn, "tags", f, candidates, query.facet_size) for f in query.facets},
                attribute_facets={a: fulltext.value_counts(conn, "attrs", a, candidates, query.facet_size)
                                  for a in query.attribute_facets},
                range_facets={n: fulltext.range_counts(conn, n, edges, candidates)
                              for n, edges in query.range_facets.items()},
            )

    def index_version(self) -> str:
        """Changes with every full rebuild (cursors made before one are refused)."""
        with self._snapshot() as (conn, _):
            return str(fulltext.generation(conn))

    def vectors(self, ids: list[str]) -> np.ndarray:
        """Fused vectors of `ids` in that order (a row of zeros for a product without one)."""
        with self._snapshot() as (_, vectors):
            out = np.zeros((len(ids), self.dims.fused), dtype=np.float32)
            for row, pid in enumerate(ids):
                if pid in vectors.fused:
                    out[row] = vectors.fused.vector(pid)
            return out

    def similar(self, product_id: str, k: int = 10, filters: dict[str, list[str]] | None = None) -> list[Hit]:
        """Nearest products by fused vector that pass `filters`, never the product itself.

        Raises `NotFound` for an unknown product; a product without a fused vector has no neighbours.
        """
        with self._snapshot() as (conn, vectors):
            if product_id not in vectors.fused:
                if not fulltext.has_doc(conn, product_id):
                    raise NotFound(f"unknown product id {product_id!r}")
                return []
            vector = vectors.fused.vector(product_id)
            neighbours = self._knn(conn, vectors.fused, vector, k, fulltext.Scope(filters or {}), exclude=product_id)
            return fulltext.hits(conn, [(pid, score, ()) for pid, score in neighbours])

    def count(self) -> int:
        with self._snapshot() as (conn, _):
            return fulltext.count(conn)

    def close(self) -> None:
        self._reader.close()
        self._writer.close()

    def _knn(
        self,
        conn: sqlite3.Connection,
        index: VectorIndex,
        vector: np.ndarray,
        k: int,
        scope: fulltext.Scope,
        exclude: str | None = None,
    ) -> list[tuple[str, float]]:
        """The `k` nearest products passing `scope`: oversample FAISS, keep what passes, widen until enough
        (without filters, FAISS's own top `k`)."""
        if not (scope.tags or scope.attributes or scope.ranges):
            ids, sims = index.search(np.asarray(vector)[None, :], min(k, len(index)), exclude=[exclude])
            return list(zip(ids[0], sims[0].tolist()))
        fetch = 4 * k
        while True:
            ids, sims = index.search(np.asarray(vector)[None, :], min(fetch, len(index)), exclude=[exclude])
            passing = fulltext.passing(conn, ids[0], scope)
            kept = [(pid, float(sim)) for pid, sim in zip(ids[0], sims[0]) if pid in passing]
            if len(kept) >= k or fetch >= len(index):
                return kept[:k]
            fetch *= 4

    @contextmanager
    def _snapshot(self, *, vectors: bool = True) -> Iterator[tuple[sqlite3.Connection, Vectors | None]]:
        """The read-only connection inside one read transaction, and the vector indexes of the same version (None
        when the reader needs no `vectors`: a search without a query vector skips looking for new ones)."""
        with self._vector_lock:
            self._reader.execute("BEGIN")
            try:
                if not vectors:
                    yield self._reader, None
                    return
                self._vectors = self._log.fresh(self._vectors, self._reader)
                yield self._reader, self._vectors
            finally:
                if self._reader.in_transaction:
                    self._reader.execute("ROLLBACK")


class _Abort(Exception):
    """Raised inside a transaction to roll it back quietly (the report already says why)."""
