"""The embedded search's vectors: FAISS snapshots on disk plus a log of the changes since, kept in SQLite.

Every write appends its vectors to the ``vector_log`` table in the same transaction as the rows it belongs to
(the caller's connection), so a crash leaves rows and vectors in step and a small write costs a few KB, not a
rewrite of the whole index. When the log holds `SNAPSHOT_EVERY` changes and `SNAPSHOT_SHARE` of the index size,
or has been growing for `SNAPSHOT_SECONDS` (and on a full rebuild), the indexes are saved as snapshot N+1 (``text.N.faiss`` / ``fused.N.faiss``), after the files are safely on disk, and the log up to it
is dropped in the same transaction. Readers load the snapshot their SQLite read transaction names and replay
the log after it, so another process's writes show up at the next query.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from shoptag.core.errors import Conflict
from shoptag.core.settings import IndexSettings
from shoptag.vectors.faiss_index import VectorIndex, index_options

from .search_common import VectorDims

KEEP_VERSIONS = 2  # vector snapshots kept on disk, so a reader holding the previous one can still load it
# a snapshot rewrites the whole index, so one per write batch made tagging 20k products save both indexes 20
# times: the log grows with the index (amortised, each vector is rewritten a few times), and is bounded in age
SNAPSHOT_EVERY = 1000  # fewest logged vector changes worth a snapshot
SNAPSHOT_SHARE = 0.5  # ... and at least this share of the index size
SNAPSHOT_SECONDS = 300.0  # or: any logged change once the snapshot is this old

SCHEMA = """
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

VectorChange = tuple[str, np.ndarray | None, np.ndarray | None]  # product id, text vector, fused vector


@dataclass
class Vectors:
    """The two FAISS indexes: snapshot `version` with the vector log applied up to `seq`."""

    version: int
    text: VectorIndex
    fused: VectorIndex
    seq: int = 0


class VectorLog:
    """Snapshots in `directory` + the log table of the caller's SQLite database; every method takes the
    connection whose transaction it works in."""

    def __init__(self, directory: Path, dims: VectorDims, index: IndexSettings) -> None:
        self.directory = directory
        self.dims = dims
        self.index = index

    def empty(self, version: int = -1, seq: int = 0) -> Vectors:
        return Vectors(version, self._new(self.dims.text), self._new(self.dims.fused), seq=seq)

    def _new(self, dim: int) -> VectorIndex:
        """An empty index (`auto`: exact, until a rebuild chooses by size)."""
        return VectorIndex(dim, **index_options(self.index))

    def fresh(self, vectors: Vectors, conn: sqlite3.Connection) -> Vectors:
        """`vectors` brought up to what `conn` sees: a newer snapshot is loaded, then the log after it replayed.
        One query when nothing changed (every search asks): the same snapshot and no seq logged past `vectors.seq`
        (AUTOINCREMENT's last seq only grows, so none can be in the log)."""
        version, last = conn.execute(
            "SELECT (SELECT value FROM meta WHERE key = 'vectors'),"
            " (SELECT seq FROM sqlite_sequence WHERE name = 'vector_log')").fetchone()
        if version == vectors.version and (last or 0) == vectors.seq:
            return vectors
        if version > vectors.version:
            vectors = self._load(version)
            vectors.seq = conn.execute("SELECT value FROM meta WHERE key = 'log_seq'").fetchone()[0]
        changes = []
        for seq, product_id, text, fused in conn.execute(
            "SELECT seq, id, text, fused FROM vector_log WHERE seq > ? ORDER BY seq", (vectors.seq,)
        ):
            changes.append((product_id, _vector(text), _vector(fused)))
            vectors.seq = seq
        self._check_dims(vectors, changes)
        _apply(vectors, changes)
        return vectors

    def _check_dims(self, vectors: Vectors, changes: Sequence[VectorChange]) -> None:
        """`Conflict` when the index holds vectors of other sizes than the encoders make: the workspace was
        built with other encoders than the settings now name (a missing --config is the usual cause)."""
        for name, index, side in (("text", vectors.text, 1), ("fused", vectors.fused, 2)):
            want = getattr(self.dims, name)
            other = {index.dim, *(len(c[side]) for c in changes if c[side] is not None)} - {want}
            if other:
                raise Conflict(
                    f"{self.directory}: the search index holds {name} vectors of {other.pop()} dimensions but the "
                    f"configured encoders make {want}: use the settings this workspace was built with (--config or "
                    "SHOPTAG_CONFIG), or `shoptag reindex` to rebuild the index for these encoders")

    def log(self, conn: sqlite3.Connection, vectors: Vectors, changes: Sequence[VectorChange]) -> None:
        """Append products' vectors (None: it has none) to the log and apply them to the live indexes."""
        if not changes:
            return
        conn.executemany("INSERT INTO vector_log (id, text, fused) VALUES (?, ?, ?)",
                         [(product_id, _blob(text), _blob(fused)) for product_id, text, fused in changes])
        # the write transaction's own last seq: AUTOINCREMENT records it in sqlite_sequence
        vectors.seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'vector_log'").fetchone()[0]
        _apply(vectors, changes)

    def fill(self, vectors: Vectors, text: tuple[list[str], list[np.ndarray]],
             fused: tuple[list[str], list[np.ndarray]]) -> None:
        """A rebuild's new indexes over (ids, vectors) of each kind; `commit` saves them as the next snapshot."""
        vectors.text = self._build(self.dims.text, *text)
        vectors.fused = self._build(self.dims.fused, *fused)

    def commit(self, conn: sqlite3.Connection, vectors: Vectors, *, snapshot: bool = False) -> None:
        """Inside the write transaction, before COMMIT: save a snapshot when asked, when the log has grown to
        `SNAPSHOT_EVERY` changes and `SNAPSHOT_SHARE` of the index, or when it is older than `SNAPSHOT_SECONDS`."""
        logged = vectors.seq - conn.execute("SELECT value FROM meta WHERE key = 'log_seq'").fetchone()[0]
        if snapshot or logged >= max(SNAPSHOT_EVERY, SNAPSHOT_SHARE * len(vectors.fused)) or (
                logged and self._snapshot_age(conn) >= SNAPSHOT_SECONDS):
            self._save_snapshot(conn, vectors)

    def _snapshot_age(self, conn: sqlite3.Connection) -> float:
        """Seconds since the current snapshot was written (0 before the first: the size rule decides)."""
        version = self.version(conn)
        path = self._path("fused", version)
        return time.time() - path.stat().st_mtime if version and path.is_file() else 0.0

    def discard_next(self, conn: sqlite3.Connection) -> None:
        """After a rollback: remove the snapshot files a failed commit may have written."""
        self._path("text", self.version(conn) + 1).unlink(missing_ok=True)
        self._path("fused", self.version(conn) + 1).unlink(missing_ok=True)

    def drop_old(self, vectors: Vectors) -> None:
        """After a commit: keep only the last `KEEP_VERSIONS` snapshots."""
        for path in self.directory.glob("*.faiss"):
            if int(path.name.split(".")[1]) < vectors.version - KEEP_VERSIONS + 1:
                path.unlink(missing_ok=True)

    @staticmethod
    def version(conn: sqlite3.Connection) -> int:
        return conn.execute("SELECT value FROM meta WHERE key = 'vectors'").fetchone()[0]

    @staticmethod
    def last_seq(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'vector_log'").fetchone()
        return row[0] if row else 0

    def _save_snapshot(self, conn: sqlite3.Connection, vectors: Vectors) -> None:
        """Write the indexes as the next snapshot and drop the log it includes (inside the transaction)."""
        vectors.version = self.version(conn) + 1
        vectors.text.save(self._path("text", vectors.version))
        vectors.fused.save(self._path("fused", vectors.version))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'vectors'", (vectors.version,))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'log_seq'", (vectors.seq,))
        conn.execute("DELETE FROM vector_log WHERE seq <= ?", (vectors.seq,))

    def _path(self, kind: str, version: int) -> Path:
        return self.directory / f"{kind}.{version}.faiss"

    def _load(self, version: int) -> Vectors:
        if version == 0:
            return self.empty(0)
        return Vectors(version, VectorIndex.load(self._path("text", version), self.index),
                       VectorIndex.load(self._path("fused", version), self.index))

    def _build(self, dim: int, ids: list[str], vectors: list[np.ndarray]) -> VectorIndex:
        return VectorIndex.build(ids, np.vstack(vectors), **index_options(self.index)) if ids else self._new(dim)


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
