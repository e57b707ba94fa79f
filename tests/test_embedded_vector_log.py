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


def _hits(backend: EmbeddedBackend, text: str) -> list[str]:
    from shoptag.indexer.documents import SearchQuery

    return [h.id for h in backend.search(SearchQuery(text=text, size=10)).hits]


def test_a_rewrite_logs_only_changed_vectors_and_reindexes_only_changed_text(tmp_path):
    from dataclasses import replace

    from shoptag.indexer.documents import DocTag

    backend = EmbeddedBackend(tmp_path, DIMS)
    docs = [_doc(i) for i in range(3)]
    backend.upsert(docs)
    assert _log_rows(tmp_path) == 3

    # retagging: new tags and scores, same text and vectors — nothing logged, the new tag is found and filtered on
    retagged = [replace(d, tags={"colour": [DocTag("red", 0.9, "model")]}) for d in docs]
    backend.upsert(retagged)
    assert _log_rows(tmp_path) == 3
    assert sorted(_hits(backend, "red")) == ["p0", "p1", "p2"]

    # one product's title and another's vector change: the new word is found and the old one not, one vector logged
    moved = _doc(7)
    backend.upsert([replace(retagged[0], title="velvet jacket"),
                    replace(retagged[1], text_vector=moved.text_vector, fused_vector=moved.fused_vector)])
    assert _log_rows(tmp_path) == 4
    for view in (backend, EmbeddedBackend(tmp_path, DIMS)):
        assert _hits(view, "velvet") == ["p0"] and sorted(_hits(view, "product")) == ["p1", "p2"]
        assert np.allclose(view.vectors(["p1"])[0], moved.fused_vector, atol=1e-6)
        assert {h.id for h in view.similar("p1", 2)} == {"p0", "p2"}


def test_a_search_store_from_before_vector_digests_gets_the_column_and_logs_each_vector_once_more(tmp_path):
    backend = EmbeddedBackend(tmp_path, DIMS)
    backend.upsert([_doc(0), _doc(1)])
    backend.close()
    with sqlite3.connect(tmp_path / "search.sqlite") as db:
        db.execute("ALTER TABLE docs DROP COLUMN vectors_hash")
    reopened = EmbeddedBackend(tmp_path, DIMS)
    reopened.upsert([_doc(0), _doc(1)])
    assert _log_rows(tmp_path) == 4  # the old rows had no digest: logged again, once
    reopened.upsert([_doc(0), _doc(1)])
    assert _log_rows(tmp_path) == 4
    assert sorted(h.id for h in reopened.similar("p0", 5)) == ["p1"]


def test_opening_an_index_with_encoders_of_another_size_is_a_conflict_that_names_the_fix(tmp_path, monkeypatch):
    import pytest
    from shoptag.core.errors import Conflict

    monkeypatch.setattr(vector_log, "SNAPSHOT_EVERY", 3)
    backend = EmbeddedBackend(tmp_path, DIMS)
    backend.upsert([_doc(0), _doc(1)])  # in the log only
    other = VectorDims(text=16, image=None, fused=16)
    with pytest.raises(Conflict, match="holds text vectors of 8 dimensions but the configured encoders make 16.*--config"):
        EmbeddedBackend(tmp_path, other)
    backend.upsert([_doc(2)])  # now in a snapshot, with an empty log
    with pytest.raises(Conflict, match="8 dimensions"):
        EmbeddedBackend(tmp_path, other)
    assert EmbeddedBackend(tmp_path, DIMS).count() == 3  # nothing was harmed


def test_reindex_for_new_encoders_sets_the_old_index_aside(tmp_path):
    import pytest
    from shoptag.core.errors import Conflict
    from shoptag.core.settings import Settings
    from shoptag.indexer.backends import open_backend

    settings = Settings(workspace=tmp_path)
    open_backend(settings, DIMS).upsert([_doc(0), _doc(1)])
    other = VectorDims(text=16, image=None, fused=16)
    with pytest.raises(Conflict):  # tag, search, serve: the settings are the likelier mistake
        open_backend(settings, other, set_aside_damaged=True)
    fresh = open_backend(settings, other, set_aside_other_encoders=True)  # reindex
    assert fresh.count() == 0 and fresh.dims == other
    assert [p.name.startswith("search.other-encoders-") for p in tmp_path.glob("search.*")] == [True]
