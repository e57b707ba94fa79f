"""The store's schema version: a file written before tags could come from behaviour (and before what a backend
received recorded its change number) is upgraded in place when opened (rows, index and change triggers kept),
and a file from a newer shoptag is refused."""

from __future__ import annotations

import sqlite3

import pytest

from shoptag.core.errors import Corrupt
from shoptag.store.records import CHANGE_TRIGGERS, SCHEMA, SCHEMA_VERSION, Store

OLD_CHECK = "CHECK (source IN ('feedback', 'catalog', 'model'))"
OLD_INDEXED_SEQ = "    seq INTEGER NOT NULL DEFAULT 0,  -- the change seq that document was current as of\n"


def old_format_db(path) -> None:
    """A store as the version before schema versioning wrote it (user_version 0, the three-source check)."""
    schema = SCHEMA.replace("CHECK (source IN ('feedback', 'catalog', 'model', 'behaviour'))", OLD_CHECK)
    schema = schema.replace(OLD_INDEXED_SEQ, "")
    assert OLD_CHECK in schema and "seq INTEGER NOT NULL DEFAULT 0" not in schema.split("CREATE TABLE IF NOT EXISTS indexed")[1].split(";")[0]
    db = sqlite3.connect(path)
    db.executescript(schema + CHANGE_TRIGGERS)
    db.execute("INSERT INTO products (id, title, text_hash, content_hash, updated_at) VALUES ('p1', 'Star', 'h', "
               "'c', 0)")
    db.execute("INSERT INTO tags VALUES ('p1', 'colour', 'red', 'model', 'review', 0.4, '{\"threshold\": 0.5}', 0)")
    db.execute("INSERT INTO tags VALUES ('p1', 'kind', 'lamp', 'catalog', 'accepted', 1.0, NULL, 0)")
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO tags VALUES ('p1', 'season', 'christmas', 'behaviour', 'review', NULL, NULL, 0)")
    db.execute("INSERT INTO indexed (backend, product_id, doc_hash) VALUES ('embedded', 'p1', 'd')")
    db.commit()
    db.close()


def test_an_old_store_is_upgraded_in_place_and_keeps_its_rows(tmp_path):
    path = tmp_path / "shoptag.db"
    old_format_db(path)
    store = Store(path)
    try:
        assert store.read("PRAGMA user_version")[0][0] == SCHEMA_VERSION
        assert [(t.family, t.value, t.source, t.evidence) for t in store.tags_of("p1")] == [
            ("colour", "red", "model", {"threshold": 0.5}), ("kind", "lamp", "catalog", None)]
        # what the backend received keeps its hash and counts as older than any change (compared by hash)
        assert store.indexed_hashes("embedded") == {"p1": "d"}
        assert store.read("SELECT seq FROM indexed")[0][0] == 0
        assert store.changed_since(0, "embedded") == ["p1"]
        seq = store.change_seq()
        with store.transaction() as db:
            db.execute("INSERT INTO tags VALUES ('p1', 'season', 'christmas', 'behaviour', 'review', NULL, NULL, 0)")
        assert store.change_seq() > seq  # the change triggers were made again on the new table
        indexes = {r[0] for r in store.read("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "tags_by_family" in indexes
        with store.transaction() as db:  # the foreign key to products holds on the rebuilt table
            db.execute("DELETE FROM products WHERE id = 'p1'")
        assert store.tags_of("p1") == []
    finally:
        store.close()
    Store(path).close()  # opening again changes nothing


def test_a_store_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "shoptag.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(Corrupt, match="newer shoptag"):
        Store(path)
