"""The embedded store: one SQLite file (WAL) holding products, tags with scores and evidence, feedback,
rejects and runs. Every write is a transaction, so a crash leaves the last committed batch, and a run's
cursor says where to resume.

Tag sources, strongest first: ``feedback`` (a person's correction), ``catalog`` (known tags the shop sent),
``model``, ``behaviour`` (derived from what shoppers do: seasonality from sales dates, tags a product narrowly
missed but is bought with; always "needs review", a person's decision makes them feedback). The model only ever
writes families that have no catalog or feedback tag on that product.

The file's schema version is SQLite's `user_version`; `MIGRATIONS` bring an older file up to date when it is
opened (each in one transaction), and a file from a newer shoptag is refused rather than misread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shoptag.core.errors import Corrupt

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    attributes TEXT NOT NULL DEFAULT '{}',
    image TEXT,
    text TEXT NOT NULL DEFAULT '',
    text_hash TEXT NOT NULL,
    image_hash TEXT,
    content_hash TEXT NOT NULL,
    updated_at REAL NOT NULL,
    tagged_hash TEXT            -- content_hash + model version the current model tags were made for
);
CREATE TABLE IF NOT EXISTS tags (
    product_id TEXT NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    family TEXT NOT NULL,
    value TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('feedback', 'catalog', 'model', 'behaviour')),
    status TEXT NOT NULL CHECK (status IN ('accepted', 'review')),
    score REAL,
    evidence TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (product_id, family, value, source)
);
CREATE INDEX IF NOT EXISTS tags_by_family ON tags(family, value);
CREATE TABLE IF NOT EXISTS catalog_none (   -- the catalog said "no value applies" (an empty list) in a family
    product_id TEXT NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    family TEXT NOT NULL,
    PRIMARY KEY (product_id, family)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id TEXT NOT NULL,
    family TEXT NOT NULL,
    value_list TEXT NOT NULL,   -- JSON list: the product's correct values in this family ([] = none apply)
    origin TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    source TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    cursor INTEGER NOT NULL DEFAULT 0,
    counts TEXT NOT NULL DEFAULT '{}',
    started_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS indexed (
    backend TEXT NOT NULL,      -- which search index (embedded, or the Elasticsearch alias)
    product_id TEXT NOT NULL,
    doc_hash TEXT NOT NULL,     -- hash of the document last sent: incremental reindex sends only changes
    seq INTEGER NOT NULL DEFAULT 0,  -- the change seq that document was current as of
    PRIMARY KEY (backend, product_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
    product_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL        -- rises with every change to the product's content, tags or feedback (triggers)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS changes_by_seq ON changes(seq);
CREATE TABLE IF NOT EXISTS index_marks (
    backend TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,       -- every change up to this one has reached the backend
    models TEXT NOT NULL        -- the encoders its vectors came from: other encoders make every document stale
);
CREATE TABLE IF NOT EXISTS popularity (  -- decayed engagement from shopper events (max 1): the "popularity" sort
    product_id TEXT PRIMARY KEY REFERENCES products(id) ON DELETE CASCADE,
    value REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rejects (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    line INTEGER,
    product_id TEXT,
    reason TEXT NOT NULL,
    raw TEXT
);
"""

# (table, event, the product's id in the row, condition): what makes a product's search document change
_CHANGE_EVENTS = (
    ("products", "INSERT", "NEW.id", ""),
    ("products", "UPDATE", "NEW.id", "WHEN OLD.content_hash IS NOT NEW.content_hash"),
    ("products", "DELETE", "OLD.id", ""),
    ("tags", "INSERT", "NEW.product_id", ""),
    ("tags", "UPDATE", "NEW.product_id", ""),
    ("tags", "DELETE", "OLD.product_id", ""),
    ("feedback", "INSERT", "NEW.product_id", ""),
    ("popularity", "INSERT", "NEW.product_id", ""),
    ("popularity", "UPDATE", "NEW.product_id", "WHEN OLD.value IS NOT NEW.value"),
)
CHANGE_TRIGGERS = "".join(
    f"CREATE TRIGGER IF NOT EXISTS changed_{table}_{event.lower()} AFTER {event} ON {table} {when} BEGIN "
    f"INSERT INTO changes (product_id, seq) VALUES ({pid}, (SELECT coalesce(max(seq), 0) + 1 FROM changes)) "
    "ON CONFLICT (product_id) DO UPDATE SET seq = excluded.seq; "
    "END;\n"
    for table, event, pid, when in _CHANGE_EVENTS
)

TAG_SOURCES = ("feedback", "catalog", "model", "behaviour")
TAG_COLUMNS = "product_id, family, value, source, status, score, evidence, updated_at"


def _tags_allow_behaviour(db: sqlite3.Connection) -> None:
    """Version 1: the tags table's source check also allows 'behaviour'. SQLite cannot change a check in
    place, so an older table is rebuilt under the new definition (rows, index and change triggers kept)."""
    sql = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tags'").fetchone()[0]
    if "'behaviour'" in sql:
        return  # made by this version's SCHEMA
    definition = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS tags ("):]
    definition = definition[: definition.index(");") + 2]
    db.execute(definition.replace("IF NOT EXISTS tags (", "tags_migrated ("))
    db.execute(f"INSERT INTO tags_migrated ({TAG_COLUMNS}) SELECT {TAG_COLUMNS} FROM tags")
    db.execute("DROP TABLE tags")  # its index and triggers go with it; opening the store makes them again
    db.execute("ALTER TABLE tags_migrated RENAME TO tags")


def _indexed_seq(db: sqlite3.Connection) -> None:
    """Version 2: what a backend received records the change seq it was current as of, so an incremental
    reindex passes over products sent since their last change (older rows say 0: compared by hash)."""
    if "seq" not in {row[1] for row in db.execute("PRAGMA table_info(indexed)")}:
        db.execute("ALTER TABLE indexed ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")


MIGRATIONS = (_tags_allow_behaviour, _indexed_seq)  # MIGRATIONS[n] takes a file from version n to n + 1
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class StoredProduct:
    id: str
    title: str
    description: str
    attributes: dict[str, str]
    image: str | None
    text: str
    text_hash: str
    image_hash: str | None
    content_hash: str


@dataclass(frozen=True)
class StoredTag:
    family: str
    value: str
    source: str
    status: str
    score: float | None
    evidence: dict | None


class Store:
    """Thread-safe access to the workspace database (one connection, serialised by a lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=60, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._migrate()
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(CHANGE_TRIGGERS + "CREATE INDEX IF NOT EXISTS tags_by_family ON tags(family, value);")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise Corrupt(f"{path}: the store is damaged ({exc}); `shoptag check` says what is wrong, "
                          "`shoptag restore BACKUP` brings back a backup made by `shoptag backup`") from None

    def _migrate(self) -> None:
        """Bring an older file to `SCHEMA_VERSION` (foreign keys are off meanwhile: a table rebuild must not
        cascade); each step commits with its new version number, so an interrupted upgrade resumes."""
        while (version := self._db.execute("PRAGMA user_version").fetchone()[0]) < SCHEMA_VERSION:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._db.execute("PRAGMA user_version").fetchone()[0] == version:  # not done by another process
                    MIGRATIONS[version](self._db)
                    self._db.execute(f"PRAGMA user_version = {version + 1}")
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        if version > SCHEMA_VERSION:
            self._db.close()
            raise Corrupt(f"{self.path}: made by a newer shoptag (schema version {version}, this one reads up to "
                          f"{SCHEMA_VERSION}); use that version, or restore a backup made by this one")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:  # SQLite has already rolled back after a full disk or I/O error
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def read(self, sql: str, params: Sequence = ()) -> list[tuple]:
        """Rows of one read-only statement: for the modules that keep their own tables in this file."""
        return self._query(sql, params)

    def rows_for(self, sql: str, ids: Sequence[str], params: Sequence = ()) -> list[tuple]:
        """`read` for a statement whose `{ids}` stands for a list of ids of any length."""
        return self._rows_for(sql, ids, params)

    def _query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _rows_for(self, sql: str, ids: Sequence[str], params: Sequence = ()) -> list[tuple]:
        """Rows of `sql`, whose `{ids}` is replaced by placeholders, for `ids` in chunks SQLite accepts;
        `params` fill the placeholders before `{ids}`."""
        rows: list[tuple] = []
        for start in range(0, len(ids), 900):
            chunk = list(ids[start : start + 900])
            rows += self._query(sql.replace("{ids}", ",".join("?" * len(chunk))), [*params, *chunk])
        return rows

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- products -------------------------------------------------------------------------------------------
    def content_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        return dict(self._rows_for("SELECT id, content_hash FROM products WHERE id IN ({ids})", ids))

    def upsert_products(self, db: sqlite3.Connection, products: Iterable[StoredProduct]) -> None:
        """Insert or replace products inside a transaction; tags are untouched."""
        now = time.time()
        db.executemany(
            """INSERT INTO products (id, title, description, attributes, image, text, text_hash, image_hash,
                                     content_hash, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET title=excluded.title, description=excluded.description,
                 attributes=excluded.attributes, image=excluded.image, text=excluded.text,
                 text_hash=excluded.text_hash, image_hash=excluded.image_hash,
                 content_hash=excluded.content_hash, updated_at=excluded.updated_at""",
            [
                (p.id, p.title, p.description, json.dumps(p.attributes, ensure_ascii=False), p.image, p.text,
                 p.text_hash, p.image_hash, p.content_hash, now)
                for p in products
            ],
        )

    def delete_products(self, ids: Sequence[str]) -> int:
        with self.transaction() as db:
            return db.executemany("DELETE FROM products WHERE id = ?", [(i,) for i in ids]).rowcount

    def products(self, ids: Sequence[str] | None = None) -> list[StoredProduct]:
        cols = "id, title, description, attributes, image, text, text_hash, image_hash, content_hash"
        if ids is None:
            rows = self._query(f"SELECT {cols} FROM products ORDER BY id")
        else:
            rows = self._rows_for(f"SELECT {cols} FROM products WHERE id IN ({{ids}})", ids)
            order = {pid: i for i, pid in enumerate(ids)}
            rows.sort(key=lambda r: order[r[0]])
        return [StoredProduct(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7], r[8]) for r in rows]

    def set_popularity(self, values: Mapping[str, float]) -> None:
        """Each product's popularity from the latest recommendation model, rounded to 3 digits so that noise does
        not mark documents changed; a product whose value moved is reindexed by `reindex --incremental`."""
        with self.transaction() as db:
            db.executemany("INSERT INTO popularity (product_id, value) SELECT ?, ? WHERE EXISTS (SELECT 1 FROM "
                           "products WHERE id = ?) ON CONFLICT (product_id) DO UPDATE SET value = excluded.value",
                           [(pid, round(float(v), 3), pid) for pid, v in values.items()])

    def popularity(self, ids: Sequence[str]) -> dict[str, float]:
        return dict(self._rows_for("SELECT product_id, value FROM popularity WHERE product_id IN ({ids})", ids))

    def listed_at(self, ids: Sequence[str]) -> dict[str, float]:
        """When each product last entered or changed in the catalog (seconds): what "newest" sorts by."""
        return dict(self._rows_for("SELECT id, updated_at FROM products WHERE id IN ({ids})", ids))

    def attribute_names(self) -> set[str]:
        """Every attribute name some product has (what a search may filter on)."""
        return {name for (name,) in self._query(
            "SELECT DISTINCT j.key FROM products, json_each(products.attributes) AS j")}

    def attribute_values(self, name: str) -> set[str]:
        """The distinct values products have for attribute `name` (as text)."""
        return {str(value) for (value,) in self._query(
            "SELECT DISTINCT j.value FROM products, json_each(products.attributes) AS j WHERE j.key = ?", (name,))}

    def product_ids(self) -> list[str]:
        return [r[0] for r in self._query("SELECT id FROM products ORDER BY id")]

    def count_products(self) -> int:
        return self._query("SELECT COUNT(*) FROM products")[0][0]

    # ---- tags -----------------------------------------------------------------------------------------------
    def set_catalog_tags(self, db: sqlite3.Connection, product_id: str, tags: Mapping[str, Sequence[str]]) -> None:
        """Replace the catalog's known tags of a product (inside a transaction); a family with an empty list
        is recorded as "no value applies", a label like any other."""
        now = time.time()
        db.execute("DELETE FROM tags WHERE product_id = ? AND source = 'catalog'", (product_id,))
        db.execute("DELETE FROM catalog_none WHERE product_id = ?", (product_id,))
        db.executemany(
            "INSERT INTO catalog_none (product_id, family) VALUES (?, ?)",
            [(product_id, family) for family, values in tags.items() if not values],
        )
        db.executemany(
            "INSERT INTO tags (product_id, family, value, source, status, score, evidence, updated_at) "
            "VALUES (?, ?, ?, 'catalog', 'accepted', 1.0, NULL, ?)",
            [(product_id, family, value, now) for family, values in tags.items() for value in values],
        )

    def set_model_tags(
        self, db: sqlite3.Connection, batch: Mapping[str, tuple[Sequence[tuple[str, str, str, float, dict]], str]]
    ) -> dict[str, set[str]]:
        """Replace the model's tags of products: product id -> ((family, value, status, score, evidence) tuples,
        the hash they were tagged at), in a few statements for the whole batch.

        Families a product has catalog or feedback tags in are skipped: people's tags are never overwritten.
        Returns, per product, the families written.
        """
        now = time.time()
        ids = json.dumps(list(batch))
        owned: dict[str, set[str]] = {}
        for pid, family in db.execute(
            """SELECT product_id, family FROM tags WHERE source IN ('feedback', 'catalog')
                   AND product_id IN (SELECT value FROM json_each(:ids))
               UNION SELECT product_id, family FROM feedback WHERE product_id IN (SELECT value FROM json_each(:ids))
               UNION SELECT product_id, family FROM catalog_none
                   WHERE product_id IN (SELECT value FROM json_each(:ids))""", {"ids": ids}
        ):
            owned.setdefault(pid, set()).add(family)
        db.execute("DELETE FROM tags WHERE product_id IN (SELECT value FROM json_each(?)) AND source = 'model'",
                   (ids,))
        db.executemany(
            "INSERT INTO tags (product_id, family, value, source, status, score, evidence, updated_at) "
            "VALUES (?, ?, ?, 'model', ?, ?, ?, ?)",
            [
                (pid, family, value, status, score, json.dumps(evidence, ensure_ascii=False), now)
                for pid, (tags, _) in batch.items()
                for family, value, status, score, evidence in tags
                if family not in owned.get(pid, ())
            ],
        )
        db.executemany("UPDATE products SET tagged_hash = ? WHERE id = ?",
                       [(tagged_hash, pid) for pid, (_, tagged_hash) in batch.items()])
        return {pid: {family for family, *_ in tags} - owned.get(pid, set()) for pid, (tags, _) in batch.items()}

    def people_families(self, ids: Sequence[str]) -> dict[str, set[str]]:
        """Per product, the families it has catalog or feedback tags (or feedback) in: the model never tags
        those (`set_model_tags` skips them)."""
        rows = self._rows_for("SELECT DISTINCT product_id, family FROM tags WHERE source IN ('feedback', 'catalog') "
                              "AND product_id IN ({ids})", ids)
        rows += self._rows_for("SELECT DISTINCT product_id, family FROM feedback WHERE product_id IN ({ids})", ids)
        out: dict[str, set[str]] = {}
        for pid, family in rows:
            out.setdefault(pid, set()).add(family)
        return out

    def corrected_families(self, product_id: str) -> set[str]:
        """The families of a product that feedback set (values or "none applies"): its catalog tags there are
        replaced, though kept (a later undo of the correction brings them back)."""
        return {family for (family,) in self._query("SELECT DISTINCT family FROM feedback WHERE product_id = ?",
                                                   (product_id,))}

    def tags_of(self, product_id: str) -> list[StoredTag]:
        rows = self._query(
            "SELECT family, value, source, status, score, evidence FROM tags WHERE product_id = ? "
            "ORDER BY family, CASE source WHEN 'feedback' THEN 0 WHEN 'catalog' THEN 1 ELSE 2 END, score DESC",
            (product_id,),
        )
        return [StoredTag(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]) if r[5] else None) for r in rows]

    def effective_tags(self, ids: Sequence[str] | None = None) -> dict[str, dict[str, list[tuple[str, str, float]]]]:
        """Per product, per family, the accepted tags that win: feedback, else catalog, else model.

        Values are (value, source, score). An empty list means "no value applies": said by the latest
        feedback, or by the catalog where no feedback gave values.
        """
        sql = "SELECT product_id, family, value, source, score FROM tags WHERE status = 'accepted'"
        rows = self._query(sql) if ids is None else self._rows_for(sql + " AND product_id IN ({ids})", ids)
        wanted = set(ids) if ids is not None else None
        out: dict[str, dict[str, list[tuple[str, str, float]]]] = {}
        best: dict[tuple[str, str], int] = {}
        for pid, family, value, source, score in rows:
            rank = TAG_SOURCES.index(source)
            key = (pid, family)
            if key in best and best[key] < rank:
                continue
            families = out.setdefault(pid, {})
            if key not in best or rank < best[key]:
                best[key] = rank
                families[family] = []
            families[family].append((value, source, score if score is not None else 1.0))
        none_sql = "SELECT product_id, family FROM catalog_none"
        catalog_none = self._query(none_sql) if ids is None else self._rows_for(none_sql + " WHERE product_id IN ({ids})", ids)
        for pid, family in catalog_none:
            if best.get((pid, family), len(TAG_SOURCES)) > TAG_SOURCES.index("catalog"):
                out.setdefault(pid, {})[family] = []
        for pid, family in self._feedback_cleared(ids):
            if wanted is None or pid in wanted:
                out.setdefault(pid, {})[family] = []
        return out

    def known_tags(self, ids: Sequence[str] | None = None) -> dict[str, dict[str, list[str]]]:
        """Training labels: per product (of `ids`, default all), per family, feedback values else catalog values
        ([]: none applies)."""
        return {
            pid: {family: [v for v, source, _ in values if source != "model"] for family, values in families.items()
                  if all(source != "model" for _, source, _ in values)}
            for pid, families in self.effective_tags(ids).items()
        }

    def families(self) -> set[str]:
        """Every family the store holds a tag, a correction or a "none applies" in."""
        return {r[0] for r in self._query(
            "SELECT DISTINCT family FROM tags UNION SELECT DISTINCT family FROM feedback "
            "UNION SELECT DISTINCT family FROM catalog_none")}

    def values_of(self, family: str) -> set[str]:
        """The distinct values a family holds among the tags."""
        return {r[0] for r in self._query("SELECT DISTINCT value FROM tags WHERE family = ?", (family,))}

    def stream_tags(self, batch: int = 20_000) -> Iterator[tuple[str, str | None, str | None, str | None, str | None, float | None]]:
        """Every product with its tags, (product, family, value, source, status, score) ordered by product
        (a product without tags: one row of Nones)."""
        yield from self._stream(
            "SELECT p.id, t.family, t.value, t.source, t.status, t.score FROM products p "
            "LEFT JOIN tags t ON t.product_id = p.id ORDER BY p.id", batch,
        )

    def stream_tagged_hashes(self, batch: int = 20_000) -> Iterator[tuple[str, str, str | None]]:
        """(id, content hash, tagged hash) of every product in id order: what a distributed run shards by,
        holding one batch of ids at a time."""
        yield from self._stream("SELECT id, content_hash, tagged_hash FROM products ORDER BY id", batch)

    def _stream(self, sql: str, batch: int) -> Iterator[tuple]:
        """Rows of `sql` through a read-only connection of its own in one read transaction, so a long read sees
        one consistent catalog and never holds the store's lock."""
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=60, isolation_level=None)
        try:
            db.execute("BEGIN")
            cursor = db.execute(sql)
            while rows := cursor.fetchmany(batch):
                yield from rows
            db.execute("COMMIT")
        finally:
            db.close()

    def products_between(self, first: str, last: str) -> list[tuple[StoredProduct, str | None]]:
        """The products with ids from `first` to `last` (inclusive, id order) and their tagged hashes: one shard."""
        rows = self._query(
            "SELECT id, title, description, attributes, image, text, text_hash, image_hash, content_hash, tagged_hash "
            "FROM products WHERE id BETWEEN ? AND ? ORDER BY id", (first, last),
        )
        return [(StoredProduct(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7], r[8]), r[9]) for r in rows]

    def _feedback_cleared(self, ids: Sequence[str] | None = None) -> list[tuple[str, str]]:
        """(product, family) pairs whose latest feedback says no value applies."""
        sql = (
            "SELECT product_id, family, value_list FROM feedback f WHERE seq = "
            "(SELECT MAX(seq) FROM feedback g WHERE g.product_id = f.product_id AND g.family = f.family)"
        )
        rows = self._query(sql) if ids is None else self._rows_for(sql + " AND product_id IN ({ids})", ids)
        return [(pid, family) for pid, family, values in rows if not json.loads(values)]

    def tagged_hashes(self) -> dict[str, str | None]:
        return dict(self._query("SELECT id, tagged_hash FROM products"))

    def model_review_evidence(self) -> list[tuple[str, str, dict]]:
        """(product, family, evidence) of every model tag left "needs review" (its candidates and thresholds)."""
        return [(pid, family, json.loads(ev)) for pid, family, ev in self._query(
            "SELECT product_id, family, evidence FROM tags WHERE source = 'model' AND status = 'review' "
            "AND evidence IS NOT NULL ORDER BY product_id, family")]

    def replace_derived_tags(self, kind: str, tags: Sequence[tuple[str, str, str, float | None, dict]]) -> int:
        """Replace the behaviour-derived tags of one kind (`evidence.derived`): (product, family, value, score,
        evidence), always "needs review". A family people have tagged (or said none applies in) and a value the
        product already has accepted are skipped: people's word wins. Returns how many were written."""
        now = time.time()
        with self.transaction() as db:
            db.execute("DELETE FROM tags WHERE source = 'behaviour' AND json_extract(evidence, '$.derived') = ?",
                       (kind,))
            owned = set(db.execute(
                "SELECT product_id, family FROM tags WHERE source IN ('feedback', 'catalog') UNION "
                "SELECT product_id, family FROM feedback UNION SELECT product_id, family FROM catalog_none"))
            accepted = set(db.execute("SELECT product_id, family, value FROM tags WHERE status = 'accepted'"))
            rows = [(pid, family, value, score, json.dumps({**evidence, "derived": kind}, ensure_ascii=False), now)
                    for pid, family, value, score, evidence in tags
                    if (pid, family) not in owned and (pid, family, value) not in accepted]
            db.executemany(f"INSERT OR REPLACE INTO tags ({TAG_COLUMNS}) VALUES (?, ?, ?, 'behaviour', 'review', ?, ?, "
                           "?)", rows)
        return len(rows)

    def review_queue(self, limit: int = 100) -> list[tuple[str, str, str, float]]:
        return self._query(
            "SELECT product_id, family, value, score FROM tags WHERE status = 'review' ORDER BY score DESC LIMIT ?",
            (limit,),
        )

    def tag_counts(self) -> dict[str, int]:
        rows = self._query("SELECT source || ':' || status, COUNT(*) FROM tags GROUP BY source, status")
        return dict(rows)

    # ---- feedback -------------------------------------------------------------------------------------------
    def add_feedback(self, items: Iterable[tuple[str, str, Sequence[str]]], origin: str) -> int:
        """Record corrections (product, family, correct values) and make them the product's tags in that family.

        The feedback log is append-only: a later correction wins, none is ever lost.
        """
        count = 0
        with self.transaction() as db:
            for product_id, family, values in items:
                self.write_feedback(db, product_id, family, values, origin)
                count += 1
        return count

    def write_feedback(self, db: sqlite3.Connection, product_id: str, family: str, values: Sequence[str],
                       origin: str) -> int:
        """One correction inside a transaction (see `add_feedback`); returns its feedback sequence number."""
        now = time.time()
        seq = db.execute(
            "INSERT INTO feedback (product_id, family, value_list, origin, created_at) VALUES (?, ?, ?, ?, ?)",
            (product_id, family, json.dumps(list(values), ensure_ascii=False), origin, now),
        ).lastrowid
        db.execute(
            "DELETE FROM tags WHERE product_id = ? AND family = ? AND source IN ('feedback', 'model', 'behaviour')",
            (product_id, family),
        )
        db.executemany(
            "INSERT INTO tags (product_id, family, value, source, status, score, evidence, updated_at) "
            "VALUES (?, ?, ?, 'feedback', 'accepted', 1.0, NULL, ?)",
            [(product_id, family, v, now) for v in dict.fromkeys(values)],
        )
        return int(seq)

    def feedback_count(self) -> int:
        return self._query("SELECT COUNT(*) FROM feedback")[0][0]

    def has_product(self, product_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM products WHERE id = ?", (product_id,)))

    # ---- search index bookkeeping ---------------------------------------------------------------------------
    def indexed_hashes(self, backend: str, ids: Sequence[str] | None = None) -> dict[str, str]:
        """Document hashes the backend last received: of every product, or of `ids` only."""
        sql = "SELECT product_id, doc_hash FROM indexed WHERE backend = ?"
        if ids is None:
            return dict(self._query(sql, (backend,)))
        return dict(self._rows_for(sql + " AND product_id IN ({ids})", ids, (backend,)))

    def set_indexed(
        self, backend: str, hashes: Mapping[str, str], *, replace_all: bool = False, gone: Sequence[str] = (),
        mark: tuple[int, str] | None = None, seq: int = 0,
    ) -> None:
        """Record what the backend now holds: documents sent, built from the store as of change `seq`
        (`replace_all` after a full reindex forgets every other), products deleted from it, and optionally the
        (change seq, models) it is complete up to."""
        with self.transaction() as db:
            if replace_all:
                db.execute("DELETE FROM indexed WHERE backend = ?", (backend,))
            db.executemany("DELETE FROM indexed WHERE backend = ? AND product_id = ?", [(backend, pid) for pid in gone])
            db.executemany(
                "INSERT OR REPLACE INTO indexed (backend, product_id, doc_hash, seq) VALUES (?, ?, ?, ?)",
                [(backend, pid, h, seq) for pid, h in hashes.items()],
            )
            if mark is not None:
                db.execute("INSERT OR REPLACE INTO index_marks (backend, seq, models) VALUES (?, ?, ?)", (backend, *mark))

    def change_seq(self) -> int:
        """The latest change's number: take it before reading what to index."""
        return self._query("SELECT coalesce(max(seq), 0) FROM changes")[0][0]

    def index_mark(self, backend: str) -> tuple[int, str] | None:
        """(change seq, models) the backend is complete up to, or None when no reindex has recorded one."""
        row = self._query("SELECT seq, models FROM index_marks WHERE backend = ?", (backend,))
        return (row[0][0], row[0][1]) if row else None

    def changed_since(self, seq: int, backend: str | None = None) -> list[str]:
        """Ids of products (deleted ones included) changed after change number `seq`; with `backend`, less
        those it received a document of since their last change (a `tag` run sends each batch as it goes)."""
        if backend is None:
            return [r[0] for r in self._query("SELECT product_id FROM changes WHERE seq > ? ORDER BY product_id", (seq,))]
        return [r[0] for r in self._query(
            """SELECT c.product_id FROM changes c
               LEFT JOIN indexed i ON i.backend = ? AND i.product_id = c.product_id
               WHERE c.seq > ? AND (i.seq IS NULL OR i.seq < c.seq) ORDER BY c.product_id""", (backend, seq))]

    # ---- runs and rejects -----------------------------------------------------------------------------------
    def start_run(self, kind: str, source: str | None) -> tuple[int, int]:
        """A run id and the cursor to resume from: an unfinished run of the same kind and source resumes."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT id, cursor FROM runs WHERE kind = ? AND source IS ? AND status = 'running' "
                "ORDER BY id DESC LIMIT 1",
                (kind, source),
            ).fetchone()
            if row:
                return int(row[0]), int(row[1])
            cur = db.execute(
                "INSERT INTO runs (kind, source, status, started_at) VALUES (?, ?, 'running', ?)",
                (kind, source, time.time()),
            )
            return int(cur.lastrowid), 0

    def advance_run(self, db: sqlite3.Connection, run_id: int, cursor: int, counts: Mapping[str, int]) -> None:
        db.execute("UPDATE runs SET cursor = ?, counts = ? WHERE id = ?", (cursor, json.dumps(dict(counts)), run_id))

    def finish_run(self, run_id: int, status: str, counts: Mapping[str, int]) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET status = ?, counts = ?, finished_at = ? WHERE id = ?",
                (status, json.dumps(dict(counts)), time.time(), run_id),
            )

    def run_counts(self, run_id: int) -> dict[str, int]:
        return json.loads(self._query("SELECT counts FROM runs WHERE id = ?", (run_id,))[0][0])

    def add_rejects(self, db: sqlite3.Connection, run_id: int, rejects: Iterable[tuple[int | None, str | None, str, str]]) -> None:
        db.executemany(
            "INSERT INTO rejects (run_id, line, product_id, reason, raw) VALUES (?, ?, ?, ?, ?)",
            [(run_id, *r) for r in rejects],
        )

    def rejects(self, run_id: int) -> list[tuple[int | None, str | None, str, str]]:
        return self._query("SELECT line, product_id, reason, raw FROM rejects WHERE run_id = ? ORDER BY rowid", (run_id,))
