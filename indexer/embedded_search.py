"""The embedded search backend: SQLite FTS5 for BM25 and tag filters/facets, FAISS for kNN and "similar".

Layout of `directory`: ``search.sqlite`` (WAL) and the vector snapshots ``text.N.faiss`` / ``fused.N.faiss``.
Every write appends its vectors to the ``vector_log`` table in the same transaction as its rows, so a crash
leaves rows and vectors in step and a small write costs a few KB, not a rewrite of the whole index. Every
`SNAPSHOT_EVERY` logged changes (and on a full rebuild) the indexes are saved as snapshot N+1, after the files
are safely on disk, and the log up to it is dropped in the same transaction. Readers take a SQLite snapshot,
load the FAISS snapshot it names and replay the log after it, so another process's writes show up at the
next query.

Chinese text is segmented with jieba's search mode before it reaches FTS5 (whose `unicode61` tokenizer
would otherwise keep a whole run of Han characters as one token), so 牛仔 finds 牛仔裤; queries are
segmented the same way and their words OR-ed, as Elasticsearch's `multi_match` does.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import jieba
import numpy as np

from .documents import Hit, SearchDoc, SearchQuery, SearchResults, WriteReport
from .search_common import WORD, VectorDims, batches, changed_docs, doc_fingerprint, rrf_fuse, tag_values
from .vector_index import VectorIndex

HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
# bm25 weights of the FTS columns title, description, tags: the same boosts as the Elasticsearch query
BM25 = "bm25(docs_fts, 3.0, 1.0, 2.0)"
KEEP_VERSIONS = 2  # vector snapshots kept on disk, so a reader holding the previous one can still load it
SNAPSHOT_EVERY = 1000  # logged vector changes between two snapshots
BATCH = 500

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    rid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    text_model TEXT NOT NULL,
    image_model TEXT NOT NULL,
    fingerprint TEXT NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS docs_fts USING fts5(title, description, tags, tokenize = 'porter unicode61');
CREATE TABLE IF NOT EXISTS tags (
    rid INTEGER NOT NULL,
    family TEXT NOT NULL,
    value TEXT NOT NULL,
    score REAL NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (rid, family, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_by_value ON tags (family, value, rid);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('vectors', 0);
INSERT OR IGNORE INTO meta VALUES ('log_seq', 0);
CREATE TABLE IF NOT EXISTS vector_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    text BLOB,   -- NULL: the product has no such vector (or was deleted)
    fused BLOB
);
"""


def segment(text: str) -> str:
    """`text` lowercased, each run of Han characters replaced by its jieba search-mode words."""
    return HAN_RUN.sub(lambda m: " " + " ".join(jieba.cut_for_search(m.group())) + " ", text).lower()


def match_expression(text: str) -> str | None:
    """An FTS5 query OR-ing the words of `text` (segmented like the indexed text), or None without words."""
    words = dict.fromkeys(WORD.findall(segment(text)))
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words) or None


def filter_sql(filters: dict[str, list[str]], rid: str = "rid") -> tuple[str, list[str]]:
    """SQL conditions (each starting with AND) keeping rows whose tags pass `filters`: OR within, AND across."""
    sql, params = "", []
    for family, values in sorted(filters.items()):
        marks = ",".join("?" * len(values))
        sql += f" AND {rid} IN (SELECT rid FROM tags WHERE family = ? AND value IN ({marks}))"
        params += [family, *values]
    return sql, params


VectorChange = tuple[str, np.ndarray | None, np.ndarray | None]  # product id, text vector, fused vector


@dataclass
class Vectors:
    """The two FAISS indexes: snapshot `version` with the vector log applied up to `seq`."""

    version: int
    text: VectorIndex
    fused: VectorIndex
    seq: int = 0


class EmbeddedBackend:
    """SQLite FTS5 + FAISS implementation of `SearchBackend`, for catalogs without Elasticsearch."""

    name = "embedded"

    def __init__(self, directory: Path, dims: VectorDims, *, factory: str = "auto") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dims = dims
        self.factory = factory
        self._db = self.directory / "search.sqlite"
        self._writer = sqlite3.connect(self._db, isolation_level=None, check_same_thread=False)
        self._writer.execute("PRAGMA journal_mode = WAL")
        self._writer.executescript(SCHEMA)
        self._write_lock = threading.Lock()  # one writer at a time in this process (SQLite serialises processes)
        self._vector_lock = threading.Lock()  # FAISS indexes are not safe to read while they change
        self._vectors = self._fresh(Vectors(-1, *self._empty()), self._writer)

    # ---- writing --------------------------------------------------------------------------------------------
    def upsert(self, docs: Iterable[SearchDoc]) -> WriteReport:
        """Add or replace `docs` in one transaction; docs whose vectors do not fit are reported, not written."""
        report = WriteReport()
        with self._transaction() as vectors:
            changes = [(d.id, d.text_vector, d.fused_vector) for d in docs if self._write_doc(d, report)]
            self._log(vectors, changes)
        return report

    def delete(self, ids: Sequence[str]) -> WriteReport:
        """Remove products; unknown ids are ignored."""
        report = WriteReport()
        with self._transaction() as vectors:
            gone = []
            for pid in ids:
                row = self._writer.execute("DELETE FROM docs WHERE id = ? RETURNING rid", (pid,)).fetchone()
                if row is None:
                    continue
                self._writer.execute("DELETE FROM docs_fts WHERE rowid = ?", row)
                self._writer.execute("DELETE FROM tags WHERE rid = ?", row)
                gone.append((pid, None, None))
            self._log(vectors, gone)
            report.deleted = len(gone)
        return report

    def reindex(self, docs: Iterable[SearchDoc], *, incremental: bool = False) -> WriteReport:
        """Full: replace everything in one transaction (all or nothing); incremental: upsert changed docs only."""
        if incremental:
            changed: list[SearchDoc] = []
            for batch in batches(docs, BATCH):
                changed += changed_docs(batch, self._fingerprints([d.id for d in batch]))
            return self.upsert(changed)
        report = WriteReport()
        text_ids: list[str] = []
        text_vecs: list[np.ndarray] = []
        fused_ids: list[str] = []
        fused_vecs: list[np.ndarray] = []
        with self._transaction(rebuild=True) as vectors:
            for table in ("docs", "docs_fts", "tags"):
                self._writer.execute(f"DELETE FROM {table}")
            for doc in docs:
                if not self._write_doc(doc, report):
                    continue
                if doc.text_vector is not None:
                    text_ids.append(doc.id)
                    text_vecs.append(doc.text_vector)
                if doc.fused_vector is not None:
                    fused_ids.append(doc.id)
                    fused_vecs.append(doc.fused_vector)
            if not report.ok:  # like Elasticsearch: a rejected product keeps the old index live
                report.written = 0
                raise _Abort
            vectors.text = self._build(self.dims.text, text_ids, text_vecs)
            vectors.fused = self._build(self.dims.fused, fused_ids, fused_vecs)
        return report

    def _write_doc(self, doc: SearchDoc, report: WriteReport) -> bool:
        """Write one product's rows; a doc whose vectors do not fit goes to `report.failed` instead."""
        reason = self.dims.check(doc)
        if reason is not None:
            report.failed.append((doc.id, reason))
            return False
        (rid,) = self._writer.execute(
            """INSERT INTO docs (id, title, description, content_hash, text_model, image_model, fingerprint)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (id) DO UPDATE SET title = excluded.title, description = excluded.description,
                   content_hash = excluded.content_hash, text_model = excluded.text_model,
                   image_model = excluded.image_model, fingerprint = excluded.fingerprint
               RETURNING rid""",
            (doc.id, doc.title, doc.description, doc.content_hash, doc.text_model, doc.image_model,
             doc_fingerprint(doc)),
        ).fetchone()
        tag_text = " ".join(v for values in tag_values(doc).values() for v in values)
        self._writer.execute("DELETE FROM docs_fts WHERE rowid = ?", (rid,))
        self._writer.execute(
            "INSERT INTO docs_fts (rowid, title, description, tags) VALUES (?, ?, ?, ?)",
            (rid, segment(doc.title), segment(doc.description), segment(tag_text)),
        )
        self._writer.execute("DELETE FROM tags WHERE rid = ?", (rid,))
        self._writer.executemany(
            "INSERT OR REPLACE INTO tags (rid, family, value, score, source) VALUES (?, ?, ?, ?, ?)",
            [(rid, family, t.value, t.score, t.source) for family, tags in doc.tags.items() for t in tags],
        )
        report.written += 1
        return True

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
                    staged = Vectors(self._version(self._writer), *self._empty(), seq=self._last_seq())
                    yield staged
                else:
                    with self._vector_lock:  # another process may have written since we last looked
                        staged = self._vectors = self._fresh(self._vectors, self._writer)
                        yield staged
                logged = staged.seq - self._writer.execute("SELECT value FROM meta WHERE key = 'log_seq'").fetchone()[0]
                if rebuild or logged >= SNAPSHOT_EVERY:
                    self._save_snapshot(staged)
                self._writer.execute("COMMIT")
            except BaseException as error:
                self._writer.execute("ROLLBACK")
                self._path("text", self._version(self._writer) + 1).unlink(missing_ok=True)
                self._path("fused", self._version(self._writer) + 1).unlink(missing_ok=True)
                if not rebuild:  # the live indexes hold uncommitted changes: back to what is committed
                    with self._vector_lock:
                        self._vectors = self._fresh(Vectors(-1, *self._empty()), self._writer)
                if isinstance(error, _Abort):
                    return
                raise
            with self._vector_lock:
                self._vectors = staged
            self._drop_versions_before(staged.version - KEEP_VERSIONS + 1)

    def _log(self, vectors: Vectors, changes: Sequence[VectorChange]) -> None:
        """Append products' vectors (None: it has none) to the log and apply them to the live indexes."""
        for product_id, text, fused in changes:
            vectors.seq = self._writer.execute(
                "INSERT INTO vector_log (id, text, fused) VALUES (?, ?, ?) RETURNING seq",
                (product_id, _blob(text), _blob(fused)),
            ).fetchone()[0]
        _apply(vectors, changes)

    def _save_snapshot(self, vectors: Vectors) -> None:
        """Write the indexes as the next snapshot and drop the log it includes (inside the transaction)."""
        vectors.version = self._version(self._writer) + 1
        vectors.text.save(self._path("text", vectors.version))
        vectors.fused.save(self._path("fused", vectors.version))
        self._writer.execute("UPDATE meta SET value = ? WHERE key = 'vectors'", (vectors.version,))
        self._writer.execute("UPDATE meta SET value = ? WHERE key = 'log_seq'", (vectors.seq,))
        self._writer.execute("DELETE FROM vector_log WHERE seq <= ?", (vectors.seq,))

    def _last_seq(self) -> int:
        row = self._writer.execute("SELECT seq FROM sqlite_sequence WHERE name = 'vector_log'").fetchone()
        return row[0] if row else 0

    # ---- reading --------------------------------------------------------------------------------------------
    def search(self, query: SearchQuery) -> SearchResults:
        """Hybrid search: FTS5 bm25 list and kNN list fused by reciprocal rank fusion; either alone when the
        query has only text or only a vector; all filtered products (by id) when it has neither."""
        with self._snapshot() as (conn, vectors):
            filters, filter_params = filter_sql(query.filters)
            match = match_expression(query.text)
            hybrid = match is not None and query.vector is not None
            parts: list[tuple[str, list]] = []
            ranked: list[list[tuple[str, float]]] = []
            if match is not None:
                # FTS5 must stay the outer loop: a tag filter pushed into it as a rowid constraint would re-run
                # the full-text match once per allowed product (seconds at 20k products); `+` and CROSS JOIN
                # keep the filter a check on each match instead
                parts.append((f"SELECT rowid AS rid FROM docs_fts WHERE docs_fts MATCH ?{filter_sql(query.filters, '+rowid')[0]}",
                              [match, *filter_params]))
                ranked.append(conn.execute(
                    f"""SELECT d.id, -{BM25} AS score FROM docs_fts CROSS JOIN docs d ON d.rid = docs_fts.rowid
                        WHERE docs_fts MATCH ?{filter_sql(query.filters, '+d.rid')[0]}
                        ORDER BY score DESC, d.id LIMIT ?""",
                    [match, *filter_params, query.window if hybrid else query.size],
                ).fetchall())
            if query.vector is not None:
                knn = self._knn(conn, vectors.text, query.vector, query.window, query.filters)
                parts.append(("SELECT rid FROM docs WHERE id IN (SELECT value FROM json_each(?))",
                              [json.dumps([pid for pid, _ in knn])]))
                ranked.append(knn)
            if not parts:
                parts.append((f"SELECT rid FROM docs WHERE 1{filters}", filter_params))
                ranked.append([(pid, 0.0) for (pid,) in conn.execute(
                    f"SELECT id FROM docs WHERE 1{filters} ORDER BY id LIMIT ?", [*filter_params, query.size])])
            if hybrid:
                scored = rrf_fuse([[pid for pid, _ in r] for r in ranked], query.rank_constant)
            else:
                scored = ranked[0]
            candidates = " UNION ".join(sql for sql, _ in parts)
            params = [p for _, ps in parts for p in ps]
            (total,) = conn.execute(f"SELECT COUNT(*) FROM ({candidates})", params).fetchone()
            facets = {
                family: [tuple(row) for row in conn.execute(
                    f"""SELECT value, COUNT(*) AS n FROM tags WHERE family = ? AND rid IN ({candidates})
                        GROUP BY value ORDER BY n DESC, value LIMIT ?""",
                    [family, *params, query.facet_size])]
                for family in query.facets
            }
            return SearchResults(hits=_hits(conn, scored[: query.size]), total=total, facets=facets)

    def similar(self, product_id: str, k: int = 10, filters: dict[str, list[str]] | None = None) -> list[Hit]:
        """Nearest products by fused vector that pass `filters`, never the product itself.

        Raises KeyError for an unknown product; a product without a fused vector has no neighbours.
        """
        with self._snapshot() as (conn, vectors):
            if product_id not in vectors.fused:
                if conn.execute("SELECT 1 FROM docs WHERE id = ?", (product_id,)).fetchone() is None:
                    raise KeyError(product_id)
                return []
            vector = vectors.fused.vector(product_id)
            return _hits(conn, self._knn(conn, vectors.fused, vector, k, filters or {}, exclude=product_id))

    def count(self) -> int:
        with self._snapshot() as (conn, _):
            return conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0]

    def close(self) -> None:
        self._writer.close()

    def _knn(
        self,
        conn: sqlite3.Connection,
        index: VectorIndex,
        vector: np.ndarray,
        k: int,
        filters: dict[str, list[str]],
        exclude: str | None = None,
    ) -> list[tuple[str, float]]:
        """The `k` nearest products passing `filters`: oversample FAISS, keep what passes, widen until enough."""
        sql, params = filter_sql(filters, "+rid")  # drive from the FAISS candidates, check the tags of each
        fetch = 4 * k
        while True:
            ids, sims = index.search(np.asarray(vector)[None, :], min(fetch, len(index)), exclude=[exclude])
            passing = {pid for (pid,) in conn.execute(
                f"SELECT id FROM docs WHERE id IN (SELECT value FROM json_each(?)){sql}",
                [json.dumps(ids[0]), *params])}
            kept = [(pid, float(sim)) for pid, sim in zip(ids[0], sims[0]) if pid in passing]
            if len(kept) >= k or fetch >= len(index):
                return kept[:k]
            fetch *= 4

    @contextmanager
    def _snapshot(self) -> Iterator[tuple[sqlite3.Connection, Vectors]]:
        """A read-only connection inside one read transaction, and the vector indexes of the same version."""
        conn = sqlite3.connect(f"file:{self._db}?mode=ro", uri=True, isolation_level=None)
        try:
            conn.execute("BEGIN")
            with self._vector_lock:
                self._vectors = self._fresh(self._vectors, conn)
                yield conn, self._vectors
        finally:
            conn.close()

    # ---- vector files ---------------------------------------------------------------------------------------
    def _fingerprints(self, ids: list[str]) -> dict[str, str]:
        return dict(self._writer.execute(
            "SELECT id, fingerprint FROM docs WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(ids),)))

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        return conn.execute("SELECT value FROM meta WHERE key = 'vectors'").fetchone()[0]

    def _path(self, kind: str, version: int) -> Path:
        return self.directory / f"{kind}.{version}.faiss"

    def _fresh(self, vectors: Vectors, conn: sqlite3.Connection) -> Vectors:
        """`vectors` brought up to what `conn` sees: a newer snapshot is loaded, then the log after it replayed."""
        version = self._version(conn)
        if version > vectors.version:
            vectors = self._load_vectors(version)
            vectors.seq = conn.execute("SELECT value FROM meta WHERE key = 'log_seq'").fetchone()[0]
        changes = []
        for seq, product_id, text, fused in conn.execute(
            "SELECT seq, id, text, fused FROM vector_log WHERE seq > ? ORDER BY seq", (vectors.seq,)
        ):
            changes.append((product_id, _vector(text), _vector(fused)))
            vectors.seq = seq
        _apply(vectors, changes)
        return vectors

    def _empty(self) -> tuple[VectorIndex, VectorIndex]:
        return VectorIndex(self.dims.text, self.factory), VectorIndex(self.dims.fused, self.factory)

    def _load_vectors(self, version: int) -> Vectors:
        if version == 0:
            return Vectors(0, *self._empty())
        return Vectors(version, VectorIndex.load(self._path("text", version)),
                       VectorIndex.load(self._path("fused", version)))

    def _build(self, dim: int, ids: list[str], vectors: list[np.ndarray]) -> VectorIndex:
        return VectorIndex.build(ids, np.vstack(vectors), self.factory) if ids else VectorIndex(dim, self.factory)

    def _drop_versions_before(self, version: int) -> None:
        for path in self.directory.glob("*.faiss"):
            if int(path.name.split(".")[1]) < version:
                path.unlink(missing_ok=True)


class _Abort(Exception):
    """Raised inside a transaction to roll it back quietly (the report already says why)."""


def _blob(vector: np.ndarray | None) -> bytes | None:
    return None if vector is None else np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _vector(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype=np.float32)


def _apply(vectors: Vectors, changes: Sequence[VectorChange]) -> None:
    """Bring both indexes to the last change of each product, in one removal and one add per index: a flat
    FAISS index removes by compacting all its vectors, so one call per product made a 1% update of 44k
    products take seconds."""
    last = {product_id: (text, fused) for product_id, text, fused in changes}
    for index, side in ((vectors.text, 0), (vectors.fused, 1)):
        index.remove(list(last))
        kept = [(pid, pair[side]) for pid, pair in last.items() if pair[side] is not None]
        if kept:
            index.add([pid for pid, _ in kept], np.vstack([np.asarray(v, dtype=np.float32) for _, v in kept]))


def _hits(conn: sqlite3.Connection, scored: Sequence[tuple[str, float]]) -> list[Hit]:
    """Hits for (id, score) pairs in that order, with titles and tag values."""
    ids = json.dumps([pid for pid, _ in scored])
    titles = dict(conn.execute("SELECT id, title FROM docs WHERE id IN (SELECT value FROM json_each(?))", (ids,)))
    tags: dict[str, dict[str, list[str]]] = {}
    for pid, family, value in conn.execute(
        """SELECT d.id, t.family, t.value FROM tags t JOIN docs d ON d.rid = t.rid
           WHERE d.id IN (SELECT value FROM json_each(?)) ORDER BY t.family, t.score DESC, t.value""",
        (ids,),
    ):
        tags.setdefault(pid, {}).setdefault(family, []).append(value)
    return [Hit(id=pid, score=score, title=titles[pid], tags=tags.get(pid, {})) for pid, score in scored if pid in titles]
