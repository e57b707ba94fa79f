"""Embedding cache: vectors keyed by (model id, content hash), so an unchanged product is never encoded twice
and a changed model (new id) never serves stale vectors."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

T = TypeVar("T")
log = logging.getLogger("shoptag.cache")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model_id, content_hash)
) WITHOUT ROWID;
"""


class EmbeddingCache:
    """A SQLite file of float32 vectors; safe to share between processes (WAL)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open(path)
        except sqlite3.DatabaseError as exc:  # only a cache: set the damaged file aside and start afresh
            aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            path.rename(aside)
            for suffix in ("-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
            log.warning("%s: damaged embedding cache (%s); moved to %s, vectors are recomputed", path, exc, aside)
            self._db = self._open(path)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=60, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            db.execute("SELECT count(*) FROM (SELECT 1 FROM embeddings LIMIT 1)").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _select(self, columns: str, model_id: str, hashes: Sequence[str]) -> Iterator[tuple]:
        """`columns` of the rows of `model_id` whose hash is among `hashes` (each asked once)."""
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), 900):  # SQLite's bound-parameter limit
            chunk = unique[start : start + 900]
            marks = ",".join("?" * len(chunk))
            yield from self._db.execute(
                f"SELECT {columns} FROM embeddings WHERE model_id = ? AND content_hash IN ({marks})", [model_id, *chunk]
            )

    def get_many(self, model_id: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        return {key: np.frombuffer(blob, dtype=np.float32)
                for key, blob in self._select("content_hash, vector", model_id, hashes)}

    def missing(self, model_id: str, hashes: Sequence[str]) -> set[str]:
        """Which of `hashes` have no vector for `model_id` (reads keys only, not vectors)."""
        return set(hashes) - {key for (key,) in self._select("content_hash", model_id, hashes)}

    def put_many(self, model_id: str, hashes: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings (model_id, content_hash, vector) VALUES (?, ?, ?)",
                [(model_id, h, v.tobytes()) for h, v in zip(hashes, vectors)],
            )

    def count(self, model_id: str | None = None) -> int:
        if model_id is None:
            return self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM embeddings WHERE model_id = ?", (model_id,)).fetchone()[0]

    def close(self) -> None:
        self._db.close()


ENCODE_BATCHES = 16  # encoder batches per call and per cache write: resumable, and few calls


def _encode_misses(
    items: Sequence[T], misses: list[tuple[str, int]], *, model_id: str, encode: Callable[[Sequence[T]], np.ndarray],
    cache: EmbeddingCache, batch_size: int, length: Callable[[T], int] | None,
) -> Iterator[tuple[list[str], np.ndarray]]:
    """Encode the (hash, row) `misses`, sorted by `length` once (so the encoder's own length-sorted batches are
    the ones it would make over all of them: less padding than sorting each slice), `ENCODE_BATCHES` batches a
    call, each slice written to the cache at once so an interrupted run resumes where it stopped; yields each
    slice's hashes and vectors."""
    if length is not None:
        misses = sorted(misses, key=lambda miss: length(items[miss[1]]))  # stable: equal lengths keep their order
    step = batch_size * ENCODE_BATCHES
    for start in range(0, len(misses), step):
        batch = misses[start : start + step]
        vectors = encode([items[row] for _, row in batch])
        keys = [key for key, _ in batch]
        cache.put_many(model_id, keys, vectors)
        yield keys, vectors


def fill_cache(
    items: Sequence[T],
    hashes: Sequence[str],
    missing: set[str],
    *,
    model_id: str,
    encode: Callable[[Sequence[T]], np.ndarray],
    cache: EmbeddingCache,
    batch_size: int,
    length: Callable[[T], int] | None = None,
) -> Iterator[list[str]]:
    """Encode into the cache the `items` whose hash is in `missing` (as `cache.missing` gave it), keeping no
    vector; yields each slice's hashes once written, so a consumer can use them while the next is encoded."""
    first: dict[str, int] = {}
    for row, key in enumerate(hashes):
        first.setdefault(key, row)
    misses = [(key, row) for key, row in first.items() if key in missing]
    for keys, _ in _encode_misses(items, misses, model_id=model_id, encode=encode, cache=cache,
                                  batch_size=batch_size, length=length):
        yield keys


def encode_with_cache(
    items: Sequence[T],
    hashes: Sequence[str],
    *,
    model_id: str,
    dim: int,
    encode: Callable[[Sequence[T]], np.ndarray],
    cache: EmbeddingCache,
    batch_size: int,
    length: Callable[[T], int] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """Vectors for `items` (one row each), encoding only those whose hash is not cached for `model_id` (as
    `_encode_misses` says). Returns the (len(items), dim) matrix and how many items were actually encoded."""
    out = np.zeros((len(items), dim), dtype=np.float32)
    cached = cache.get_many(model_id, hashes)
    todo: dict[str, int] = {}
    for row, key in enumerate(hashes):
        if key in cached:
            out[row] = cached[key]
        elif key not in todo:
            todo[key] = row
    misses = list(todo.items())
    if on_batch:
        on_batch(len(items) - len(misses))
    for keys, vectors in _encode_misses(items, misses, model_id=model_id, encode=encode, cache=cache,
                                        batch_size=batch_size, length=length):
        cached.update(zip(keys, vectors))
        if on_batch:
            on_batch(len(keys))
    for row, key in enumerate(hashes):  # duplicates of an encoded hash and the freshly encoded rows
        if key in todo:
            out[row] = cached[key]
    return out, len(misses)
