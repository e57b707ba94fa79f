"""The embedded backend's vector log: small writes append to SQLite, snapshots come every SNAPSHOT_EVERY
changes, and a reopened backend (or another process) sees snapshot + log as one state."""

from __future__ import annotations

import sqlite3

import numpy as np

from shoptag.indexer import vector_log
from shoptag.indexer.documents import SearchDoc
from shoptag.indexer.embedded_search import EmbeddedBackend
from shoptag.indexer.search_common import VectorDims

DIMS = VectorDims(text=8, image=None, fused=8)


def _doc(i: int) -> SearchDoc:
    v = np.random.default_rng(i).normal(size=8).astype(np.float32)
    v /= np.linalg.norm(v)
    return SearchDoc(id=f"p{i}", title=f"product {i}", text_vector=v, fused_vector=v)


def _log_rows(directory) -> int:
    with sqlite3.connect(directory / "search.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM vector_log").fetchone()[0]


def test_writes_are_logged_then_snapshotted_and_reopen_consistently(tmp_path, monkeypatch):
    monkeypatch.setattr(vector_log, "SNAPSHOT_EVERY", 3)
    backend = EmbeddedBackend(tmp_path, DIMS)
    for i in range(2):
        backend.upsert([_doc(i)])
    assert _log_rows(tmp_path) == 2 and not list(tmp_path.glob("*.faiss"))  # no index rewrite per write

    reopened = EmbeddedBackend(tmp_path, DIMS)  # replays the log
    assert [h.id for h in reopened.similar("p0", 5)] == ["p1"]

    backend.upsert([_doc(2)])  # the third change: a snapshot, and the log it includes is dropped
    assert _log_rows(tmp_path) == 0 and len(list(tmp_path.glob("fused.*.faiss"))) == 1
    backend.delete(["p1"])
    backend.upsert([_doc(3)])
    assert _log_rows(tmp_path) == 2

    for view in (reopened, EmbeddedBackend(tmp_path, DIMS)):  # the old handle catches up, a new one loads
        assert sorted(h.id for h in view.similar("p0", 5)) == ["p2", "p3"]
        assert view.count() == 3


def test_a_failed_write_leaves_vectors_and_rows_as_they_were(tmp_path):
    backend = EmbeddedBackend(tmp_path, DIMS)
    backend.upsert([_doc(0), _doc(1)])
    bad = SearchDoc(id="bad", title="wrong dims", text_vector=np.ones(3, np.float32), fused_vector=np.ones(3, np.float32))
    report = backend.upsert([_doc(2), bad])
    assert [pid for pid, _ in report.failed] == ["bad"]
    assert sorted(h.id for h in EmbeddedBackend(tmp_path, DIMS).similar("p0", 5)) == ["p1", "p2"]
