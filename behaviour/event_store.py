"""The append-only event log: one SQLite file in the workspace (`events.db`).

SQLite rather than Parquet because three things the log must do are one statement each there and a rewrite of
files with Parquet: idempotent re-ingest (a UNIQUE key per event, `INSERT OR IGNORE`), retention (`DELETE ... WHERE
time < ?`) and a user's recent history at request time (an index on `(user, time)`), all crash-safe in WAL mode.
It is a separate file from `shoptag.db` so that a stream of events never holds the catalog's write lock. Columnar
reads for model building select whole columns into numpy arrays.

User and session ids arrive here already pseudonymised (`privacy.Pseudonymizer`); nothing raw is stored.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shoptag.core.errors import Corrupt

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    origin INTEGER NOT NULL,
    position INTEGER NOT NULL,
    time INTEGER NOT NULL,
    type INTEGER NOT NULL,
    user INTEGER,
    session INTEGER,
    item TEXT,
    query TEXT,
    quantity REAL NOT NULL,
    price REAL,
    UNIQUE (origin, position)
);
CREATE INDEX IF NOT EXISTS events_by_user ON events(user, time) WHERE user IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_by_time ON events(time);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class EventColumns:
    """Events as parallel arrays (what model building and evaluation consume)."""

    time: np.ndarray  # int64 seconds
    type: np.ndarray  # int8
    user: np.ndarray  # int64, -1 for guests
    session: np.ndarray  # int64, -1 when absent
    item: np.ndarray  # object (str), None for searches
    quantity: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.time)

    def select(self, mask: np.ndarray) -> EventColumns:
        return EventColumns(self.time[mask], self.type[mask], self.user[mask], self.session[mask], self.item[mask],
                            self.quantity[mask])


def hash63(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") >> 1


def file_origin(path: Path) -> int:
    """A file's identity for idempotency: a hash of its first 64 KiB. Its events are keyed (origin, line), so a
    re-run of the same file adds nothing, and a log that has grown since adds only its new lines, whatever the
    file is called now."""
    with open(path, "rb") as handle:
        return hash63("file\x1f" + handle.read(65536).hex()) | 1  # odd: never 0, which marks the shop's own ids


def own_id_key(event_id: str) -> tuple[int, int]:
    """Key of an event that carries the shop's own id: the same id is the same event from any source."""
    return 0, hash63(event_id)


def content_key(fields: tuple, occurrence: int) -> tuple[int, int]:
    """Key of an event without id or file line (an API batch): its content, and how many identical events came
    before it in the batch — so a retried batch adds nothing and true duplicates in one batch are all kept."""
    return hash63("\x1f".join(map(str, fields))) & ~1, occurrence


class EventStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # one connection, shared by the service's threads
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA cache_size=-65536")  # 64 MiB: bulk inserts keep the indexes in memory
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise Corrupt(f"{path}: not a readable events database ({exc}); restore it from a backup or move it "
                          "aside and ingest the events again") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def append(self, rows: Iterable[tuple]) -> int:
        """Insert (origin, position, time, type, user, session, item, query, quantity, price) rows in one
        transaction; rows whose (origin, position) key is already stored are skipped. Returns how many were new."""
        with self._lock:
            return self._append(rows)

    def _append(self, rows: Iterable[tuple]) -> int:
        before = self._db.total_changes
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT OR IGNORE INTO events (origin, position, time, type, user, session, item, "
                                 "query, quantity, price) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return self._db.total_changes - before

    def apply_retention(self, days: int | None) -> int:
        """Delete events older than the newest stored event minus `days` (relative to the data, not the clock, so
        a backfill of old history is not deleted as it arrives). Returns how many were deleted."""
        if days is None:
            return 0
        newest = self.newest_time()
        if newest is None:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            deleted = self._db.execute("DELETE FROM events WHERE time < ?", (newest - days * 86400,)).rowcount
            self._db.execute("INSERT INTO meta (name, value) VALUES ('deleted', ?) ON CONFLICT(name) DO UPDATE SET "
                             "value = value + excluded.value", (deleted,))
            self._db.execute("COMMIT")
        return deleted

    def _one(self, sql: str, params: Sequence = ()) -> tuple:
        with self._lock:
            return self._db.execute(sql, params).fetchone()

    def newest_time(self) -> int | None:
        return self._one("SELECT MAX(time) FROM events")[0]

    def count(self) -> int:
        return self._one("SELECT COUNT(*) FROM events")[0]

    def version(self) -> tuple[int, int]:
        """(highest seq, events deleted so far): changes whenever events are added or deleted; two index reads,
        cheap enough to check per request."""
        seq = self._one("SELECT COALESCE(MAX(seq), 0) FROM events")[0]
        deleted = self._one("SELECT COALESCE((SELECT value FROM meta WHERE name = 'deleted'), 0)")[0]
        return int(seq), int(deleted)

    def columns(self, types: Sequence[int], until: int | None = None) -> EventColumns:
        """All events of the given types (optionally before `until`), in time order, as arrays."""
        marks = ",".join("?" * len(types))
        sql = (f"SELECT time, type, COALESCE(user, -1), COALESCE(session, -1), item, quantity FROM events "
               f"WHERE type IN ({marks})" + (" AND time < ?" if until is not None else "") + " ORDER BY time, seq")
        params = [*types, *([until] if until is not None else [])]
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        if not rows:
            return EventColumns(np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros(0, np.int64),
                                np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0))
        time, kind, user, session, item, qty = zip(*rows, strict=True)
        return EventColumns(np.asarray(time, np.int64), np.asarray(kind, np.int8), np.asarray(user, np.int64),
                            np.asarray(session, np.int64), np.asarray(item, object), np.asarray(qty, np.float64))

    def user_events(self, user: int, types: Sequence[int], limit: int = 500) -> list[tuple[int, int, str, float]]:
        """A user's most recent (time, type, item, quantity) events, newest first."""
        marks = ",".join("?" * len(types))
        with self._lock:
            return self._db.execute(
                f"SELECT time, type, item, quantity FROM events WHERE user = ? AND type IN ({marks}) AND item IS "
                f"NOT NULL ORDER BY time DESC LIMIT ?", (user, *types, limit)).fetchall()
