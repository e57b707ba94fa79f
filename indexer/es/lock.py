"""One full reindex per alias at a time, decided by Elasticsearch itself: a lock document created with
``op_type=create`` (which only one writer can win) in the index ``{alias}-lock``.

The document names its owner (host, process, start) and the index it is filling, and expires `ttl` seconds after
its last renewal; the holder renews it as it goes. A lock whose expiry has passed, or whose owner is a process of
this host that no longer exists (a ``kill -9``), is stale: the next run takes it over (with the sequence number
of what it read, so two runs cannot both take it) and learns from it which half-built index to drop.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from elasticsearch import ApiError, ConflictError, Elasticsearch, NotFoundError, TransportError

from shoptag.core.errors import Conflict

LOCK_ID = "reindex"
LOCK_MAPPING = {
    "dynamic": "strict",
    "properties": {
        "owner": {"type": "keyword"},
        "host": {"type": "keyword"},
        "pid": {"type": "long"},
        "index": {"type": "keyword"},
        "started": {"type": "date", "format": "epoch_millis"},
        "expires": {"type": "date", "format": "epoch_millis"},
    },
}


# owners of the locks this process holds now: a lock of this process that is not among them was left by a run
# that failed without releasing it (the cluster went away), and is stale
_HELD: set[str] = set()


class ReindexLocked(Conflict):
    """Another reindex of the same alias holds the lock."""


def lock_index(alias: str) -> str:
    return f"{alias}-lock"


@dataclass
class Stale:
    """What a taken-over lock said: the index its dead or expired owner was filling."""

    index: str | None
    owner: str


class AliasLock:
    """The reindex lock of `alias`, held between `acquire` and `release`."""

    def __init__(self, client: Elasticsearch, alias: str, ttl: float) -> None:
        self.client = client
        self.index = lock_index(alias)
        self.alias = alias
        self.ttl = ttl
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._doc: dict[str, Any] = {}
        self._version: dict[str, int] = {}

    def acquire(self, filling: str) -> Stale | None:
        """Take the lock for filling index `filling`; `ReindexLocked` if a live run holds it. Returns what a
        stale lock that was taken over said, else None."""
        self._ensure_index()
        now = _millis()
        self._doc = {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(), "index": filling,
                     "started": now, "expires": now + int(self.ttl * 1000)}
        try:
            answer = self.client.index(index=self.index, id=LOCK_ID, document=self._doc, op_type="create", refresh=True)
            self._remember(answer)
            _HELD.add(self.owner)
            return None
        except ConflictError:
            pass
        try:
            held = self.client.get(index=self.index, id=LOCK_ID)
        except NotFoundError:  # released between our two requests: try once more
            return self.acquire(filling)
        current = held["_source"]
        if not _stale(current):
            raise ReindexLocked(
                f"another reindex of {self.alias!r} is running ({current.get('owner')}, filling "
                f"{current.get('index')}, lock expires in {max(0, (current['expires'] - _millis()) // 1000)} s); "
                "try again when it has finished")
        try:  # take over exactly the stale document we read; a run that took it first makes this a conflict
            answer = self.client.index(index=self.index, id=LOCK_ID, document=self._doc, refresh=True,
                                       if_seq_no=held["_seq_no"], if_primary_term=held["_primary_term"])
        except ConflictError:
            raise ReindexLocked(f"another reindex of {self.alias!r} took over a stale lock first") from None
        self._remember(answer)
        _HELD.add(self.owner)
        return Stale(index=current.get("index") or None, owner=str(current.get("owner")))

    def renew(self) -> None:
        """Push the expiry `ttl` seconds ahead; `ReindexLocked` if the lock is no longer ours."""
        self._doc["expires"] = _millis() + int(self.ttl * 1000)
        try:
            self._remember(self.client.index(index=self.index, id=LOCK_ID, document=self._doc, **self._version))
        except (ConflictError, NotFoundError):
            raise ReindexLocked(f"the reindex lock of {self.alias!r} expired and was taken over") from None

    def release(self) -> None:
        """Delete the lock if it is still ours (never another run's)."""
        _HELD.discard(self.owner)
        try:
            self.client.delete(index=self.index, id=LOCK_ID, refresh=True, **self._version)
        except (ApiError, TransportError):  # taken over, or the cluster is gone: the lock is stale for the next run
            pass

    def _ensure_index(self) -> None:
        if not self.client.indices.exists(index=self.index):
            self.client.options(ignore_status=400).indices.create(  # 400: created meanwhile by another run
                index=self.index, settings={"number_of_shards": 1, "auto_expand_replicas": "0-1"}, mappings=LOCK_MAPPING)

    def _remember(self, answer: Any) -> None:
        self._version = {"if_seq_no": answer["_seq_no"], "if_primary_term": answer["_primary_term"]}


def _millis() -> int:
    return int(time.time() * 1000)


def _stale(lock: dict[str, Any]) -> bool:
    """Expired, or held by a process of this host that is gone (or by this process, but no lock it holds)."""
    if int(lock.get("expires", 0)) <= _millis():
        return True
    if lock.get("host") == socket.gethostname():
        if int(lock.get("pid", 0)) == os.getpid():
            return lock.get("owner") not in _HELD
        try:
            os.kill(int(lock.get("pid", 0)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, OverflowError):
            return False
    return False
