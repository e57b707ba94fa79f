"""The embedded search's full-text store: product rows, an FTS5 index of jieba-segmented text, and the tag,
keyword attribute and numeric attribute rows behind filters, facets and sorts, in one SQLite database. Functions over the caller's connection, so the backend
decides the transaction (and keeps the vector log in the same one).

Chinese text is segmented with jieba's search mode before it reaches FTS5 (whose `unicode61` tokenizer
would otherwise keep a whole run of Han characters as one token), so 牛仔 finds 牛仔裤; queries are
segmented the same way and their words OR-ed, as Elasticsearch's `multi_match` does.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

import jieba

from .documents import MISSING_LAST, Hit, RangeBucket, SearchDoc, SearchQuery
from .search_common import WORD, doc_fingerprint, range_buckets, split_attributes, tag_values, vectors_hash

HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
# bm25 weights of the FTS columns title, description, tags: the same boosts as the Elasticsearch query
BM25 = "bm25(docs_fts, 3.0, 1.0, 2.0)"

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    rid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    text_model TEXT NOT NULL,
    image_model TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    vectors_hash TEXT NOT NULL DEFAULT ''  -- digest of the logged vectors: unchanged ones are not logged again
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
CREATE TABLE IF NOT EXISTS attrs (
    rid INTEGER NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (rid, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attrs_by_value ON attrs (name, value, rid);
CREATE TABLE IF NOT EXISTS numbers (
    rid INTEGER NOT NULL,
    name TEXT NOT NULL,   -- a declared numeric attribute (price, ...)
    value REAL NOT NULL,
    PRIMARY KEY (rid, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS numbers_by_value ON numbers (name, value, rid);
CREATE TABLE IF NOT EXISTS sort_keys (rid INTEGER PRIMARY KEY, listed_at REAL NOT NULL, popularity REAL);
CREATE TABLE IF NOT EXISTS generation (value INTEGER NOT NULL);  -- one row: full rebuilds so far
INSERT INTO generation SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM generation);
"""
ROW_TABLES = ("tags", "attrs", "numbers", "sort_keys")  # a product's rows beside `docs`, by rid
# document sort keys (`SORTS`) -> SQL of the product `d.rid`'s value (NULL when it has none)
SORT_SQL = {
    "price": "(SELECT value FROM numbers WHERE rid = d.rid AND name = 'price')",
    "listed_at": "(SELECT listed_at FROM sort_keys WHERE rid = d.rid)",
    "popularity": "(SELECT popularity FROM sort_keys WHERE rid = d.rid)",
}


def _han_tokens(run: str, *, indexing: bool) -> list[str]:
    """Tokens of a run of Han characters: jieba's search-mode words and the run's overlapping bigrams (what
    Elasticsearch's `cjk_bigram` makes, so the two backends find the same products), plus, when indexing, every
    single character, so that a one-character query (裙, 鞋, 表) finds the products containing it. A query of one
    character is that character; longer queries do not add their characters, which would match far too much
    (牛 of 牛仔 in 牛肉干)."""
    if len(run) == 1:
        return [run]
    bigrams = [run[i : i + 2] for i in range(len(run) - 1)]
    return list(jieba.cut_for_search(run)) + bigrams + (list(run) if indexing else [])


def segment(text: str, *, indexing: bool = False) -> str:
    """`text` lowercased, each run of Han characters replaced by its tokens (`_han_tokens`)."""
    return HAN_RUN.sub(lambda m: " " + " ".join(_han_tokens(m.group(), indexing=indexing)) + " ", text).lower()


def match_expression(text: str) -> str | None:
    """An FTS5 query OR-ing the words of `text` (segmented like the indexed text), or None without words."""
    words = dict.fromkeys(WORD.findall(segment(text)))
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words) or None


@dataclass(frozen=True)
class Scope:
    """What a product must pass: tag filters, keyword attribute filters (both OR within a name, AND across)
    and numeric ranges (inclusive)."""

    tags: dict[str, list[str]]
    attributes: dict[str, list[str]] = field(default_factory=dict)
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    @classmethod
    def of(cls, query: SearchQuery) -> Scope:
        return cls(query.filters, query.attributes, query.ranges)

    @classmethod
    def of_knn(cls, query: SearchQuery) -> Scope:
        """The scope of the named tags' kNN list: the query's, with the tags the query names
        (`SearchQuery.knn_filters`)."""
        return cls(query.knn_filters, query.attributes, query.ranges)


def filter_sql(scope: Scope, rid: str = "rid") -> tuple[str, list]:
    """SQL conditions (each starting with AND) keeping the rows that pass `scope`."""
    sql, params = "", []
    for table, column, chosen in (("tags", "family", scope.tags), ("attrs", "name", scope.attributes)):
        for name, values in sorted(chosen.items()):
            marks = ",".join("?" * len(values))
            sql += f" AND {rid} IN (SELECT rid FROM {table} WHERE {column} = ? AND value IN ({marks}))"
            params += [name, *values]
    for name, (low, high) in sorted(scope.ranges.items()):
        bounds = [(op, bound) for op, bound in ((">=", low), ("<=", high)) if bound is not None]
        sql += f" AND {rid} IN (SELECT rid FROM numbers WHERE name = ?{''.join(f' AND value {op} ?' for op, _ in bounds)})"
        params += [name, *(bound for _, bound in bounds)]
    return sql, params


def boost_sql(boosts: dict[str, list[str]], weight: float) -> tuple[str, list]:
    """SQL of `weight` × how many boosted families (with one of their values) the product `d.rid` carries:
    what an Elasticsearch `terms` clause per family in `should` adds to a match's score."""
    if not boosts:
        return "0", []
    ors, params = [], []
    for family, values in sorted(boosts.items()):
        ors.append(f"(family = ? AND value IN ({','.join('?' * len(values))}))")
        params += [family, *values]
    return f"? * (SELECT COUNT(DISTINCT family) FROM tags t WHERE t.rid = d.rid AND ({' OR '.join(ors)}))", \
        [weight, *params]


# ---- writing ------------------------------------------------------------------------------------------------
def write_docs(conn: sqlite3.Connection, docs: Sequence[SearchDoc], numeric: Sequence[str]) -> list[SearchDoc]:
    """Insert or replace products' rows, full-text entries, tags and attributes (the `numeric` ones as numbers)
    in a few statements per batch, one per table, not per product (per-product statements were most of what
    syncing a tag run cost). A product twice in `docs` keeps its last version.

    Retagging changes tags and scores, rarely the text or the vectors: a full-text entry whose text is
    unchanged is kept (FTS5 re-tokenises the old text to delete it), and the docs whose vectors changed (or are
    new) are returned, so only those go to the vector log."""
    docs = list({d.id: d for d in docs}.values())
    if not docs:
        return []
    ids = json.dumps([d.id for d in docs])
    before = {pid: (rid, vectors, (title, description, tags)) for pid, rid, vectors, title, description, tags in conn.execute(
        """SELECT d.id, d.rid, d.vectors_hash, f.title, f.description, f.tags
           FROM docs d LEFT JOIN docs_fts f ON f.rowid = d.rid WHERE d.id IN (SELECT value FROM json_each(?))""",
        (ids,))}
    full_text = {d.id: (segment(d.title, indexing=True), segment(d.description, indexing=True),
                        segment(" ".join(v for values in tag_values(d).values() for v in values), indexing=True))
                 for d in docs}
    vector_hashes = {d.id: vectors_hash(d) for d in docs}
    rewrite = [d.id for d in docs if d.id not in before or before[d.id][2] != full_text[d.id]]
    old = json.dumps([rid for rid, _, _ in before.values()])
    conn.execute("DELETE FROM docs_fts WHERE rowid IN (SELECT value FROM json_each(?))",
                 (json.dumps([before[pid][0] for pid in rewrite if pid in before]),))
    for table in ROW_TABLES:
        conn.execute(f"DELETE FROM {table} WHERE rid IN (SELECT value FROM json_each(?))", (old,))
    conn.executemany(
        """INSERT INTO docs (id, title, description, content_hash, text_model, image_model, fingerprint, vectors_hash)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (id) DO UPDATE SET title = excluded.title, description = excluded.description,
               content_hash = excluded.content_hash, text_model = excluded.text_model,
               image_model = excluded.image_model, fingerprint = excluded.fingerprint,
               vectors_hash = excluded.vectors_hash""",
        [(d.id, d.title, d.description, d.content_hash, d.text_model, d.image_model, doc_fingerprint(d),
          vector_hashes[d.id]) for d in docs],
    )
    rid_of = dict(conn.execute("SELECT id, rid FROM docs WHERE id IN (SELECT value FROM json_each(?))", (ids,)))
    conn.executemany("INSERT INTO docs_fts (rowid, title, description, tags) VALUES (?, ?, ?, ?)",
                     [(rid_of[pid], *full_text[pid]) for pid in rewrite])
    conn.executemany(
        "INSERT OR REPLACE INTO tags (rid, family, value, score, source) VALUES (?, ?, ?, ?, ?)",
        [(rid_of[d.id], family, t.value, t.score, t.source) for d in docs for family, tags in d.tags.items()
         for t in tags],
    )
    keywords, numbers = [], []
    for d in docs:
        words, values = split_attributes(d.attributes, numeric)
        keywords += [(rid_of[d.id], name, value) for name, value in words.items()]
        numbers += [(rid_of[d.id], name, value) for name, value in values.items()]
    conn.executemany("INSERT INTO attrs (rid, name, value) VALUES (?, ?, ?)", keywords)
    conn.executemany("INSERT INTO numbers (rid, name, value) VALUES (?, ?, ?)", numbers)
    conn.executemany("INSERT INTO sort_keys (rid, listed_at, popularity) VALUES (?, ?, ?)",
                     [(rid_of[d.id], d.listed_at, d.popularity) for d in docs])
    return [d for d in docs if d.id not in before or before[d.id][1] != vector_hashes[d.id]]


def migrate(conn: sqlite3.Connection) -> None:
    """A search store made before `docs.vectors_hash` gets the column, empty: each product's next write logs
    its vectors once more."""
    conn.execute("BEGIN IMMEDIATE")  # another process may be adding it now
    try:
        if "vectors_hash" not in {row[1] for row in conn.execute("PRAGMA table_info(docs)")}:
            conn.execute("ALTER TABLE docs ADD COLUMN vectors_hash TEXT NOT NULL DEFAULT ''")
    finally:
        conn.execute("COMMIT")


def delete_doc(conn: sqlite3.Connection, product_id: str) -> bool:
    """Remove one product; False when it was not there."""
    row = conn.execute("DELETE FROM docs WHERE id = ? RETURNING rid", (product_id,)).fetchone()
    if row is None:
        return False
    conn.execute("DELETE FROM docs_fts WHERE rowid = ?", row)
    for table in ROW_TABLES:
        conn.execute(f"DELETE FROM {table} WHERE rid = ?", row)
    return True


def clear(conn: sqlite3.Connection) -> None:
    """Empty the store for a full rebuild, which starts a new generation (cursors of the old one are refused)."""
    for table in ("docs", "docs_fts", *ROW_TABLES):
        conn.execute(f"DELETE FROM {table}")
    conn.execute("UPDATE generation SET value = value + 1")


def generation(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT value FROM generation").fetchone()[0]


# ---- reading ------------------------------------------------------------------------------------------------
def text_ranked(conn: sqlite3.Connection, match: str, scope: Scope, limit: int, boosts: dict[str, list[str]],
                boost_weight: float, also: Sequence[str] = ()) -> tuple[list[tuple[str, float]], int | None]:
    """(id, bm25 score + query-tag boosts) of the products matching `match` and passing `scope`, best first; and,
    when it comes with the same query, how many products match or are among the ids `also` (the candidates'
    total; None: count them apart)."""
    # FTS5 must stay the outer loop: a tag filter pushed into it as a rowid constraint would re-run the
    # full-text match once per allowed product (seconds at 20k products); `+` and CROSS JOIN keep the filter a
    # check on each match instead
    sql, params = filter_sql(scope, "+d.rid")
    boost, boost_params = boost_sql(boosts, boost_weight)
    if not sql and not boost_params:
        return _fts_top(conn, match, limit, also)
    return conn.execute(
        f"""SELECT d.id, -{BM25} + {boost} AS score FROM docs_fts CROSS JOIN docs d ON d.rid = docs_fts.rowid
            WHERE docs_fts MATCH ?{sql}
            ORDER BY score DESC, d.id LIMIT ?""",
        [*boost_params, match, *params, limit],
    ).fetchall(), None


def _fts_top(conn: sqlite3.Connection, match: str, limit: int,
             also: Sequence[str]) -> tuple[list[tuple[str, float]], int | None]:
    """`text_ranked` without filters or boosts, in one query. Each match is scored once (bm25 is most of the
    cost), and only the matches scoring at least the `limit`-th best are joined to `docs` for their ids, which
    break ties: joining every match first cost half the search, and taking the top `limit` inside FTS5 alone
    cannot break a tie that straddles the cut (most short-title queries have one). The total rides along, so
    the full-text match is not run a second time to count it."""
    if limit <= 0:
        return [], None
    rows = conn.execute(
        f"""WITH m AS MATERIALIZED (SELECT rowid, -{BM25} AS score FROM docs_fts WHERE docs_fts MATCH ?),
                 cut AS (SELECT min(score) AS score FROM (SELECT score FROM m ORDER BY score DESC LIMIT ?))
            SELECT d.id, m.score, (SELECT COUNT(*) FROM m) + (SELECT COUNT(*) FROM docs
                WHERE id IN (SELECT value FROM json_each(?)) AND rid NOT IN (SELECT rowid FROM m))
            FROM m JOIN docs d ON d.rid = m.rowid
            WHERE m.score >= (SELECT score FROM cut)
            ORDER BY m.score DESC, d.id LIMIT ?""",
        [match, limit, json.dumps(list(also)), limit],
    ).fetchall()
    return [(pid, score) for pid, score, _ in rows], rows[0][2] if rows else None


def text_candidates(match: str, scope: Scope) -> tuple[str, list]:
    """SQL (and its parameters) selecting the rids of every product `text_ranked` could return."""
    sql, params = filter_sql(scope, "+rowid")
    return f"SELECT rowid AS rid FROM docs_fts WHERE docs_fts MATCH ?{sql}", [match, *params]


def id_candidates(ids: Sequence[str]) -> tuple[str, list]:
    """SQL (and its parameters) selecting the rids of the products `ids`."""
    return "SELECT rid FROM docs WHERE id IN (SELECT value FROM json_each(?))", [json.dumps(list(ids))]


def filtered(scope: Scope) -> tuple[str, list]:
    """Without text or vector: SQL (and its parameters) selecting every product passing `scope`."""
    sql, params = filter_sql(scope)
    return f"SELECT rid FROM docs WHERE 1{sql}", params


def passing(conn: sqlite3.Connection, ids: Sequence[str], scope: Scope) -> set[str]:
    """Which of `ids` pass `scope` (driven from the ids, checking the rows of each)."""
    sql, params = filter_sql(scope, "+rid")
    return {pid for (pid,) in conn.execute(
        f"SELECT id FROM docs WHERE id IN (SELECT value FROM json_each(?)){sql}", [json.dumps(list(ids)), *params])}


def union(parts: Sequence[tuple[str, list]]) -> tuple[str, list]:
    """The candidate `parts` (SQL selecting rids, parameters) as one SQL selecting their union."""
    return " UNION ".join(sql for sql, _ in parts), [p for _, ps in parts for p in ps]


def total(conn: sqlite3.Connection, candidates: tuple[str, list]) -> int:
    sql, params = candidates
    return conn.execute(f"SELECT COUNT(*) FROM ({sql})", params).fetchone()[0]


def value_counts(conn: sqlite3.Connection, table: str, name: str, candidates: tuple[str, list],
                 size: int) -> list[tuple[str, int]]:
    """The `size` most frequent values of tag family (`table` "tags") or keyword attribute ("attrs") `name`
    among the candidates, ties by value."""
    sql, params = candidates
    column = "family" if table == "tags" else "name"
    return [tuple(row) for row in conn.execute(
        f"""SELECT value, COUNT(*) AS n FROM {table} WHERE {column} = ? AND rid IN ({sql})
            GROUP BY value ORDER BY n DESC, value LIMIT ?""", [name, *params, size])]


def range_counts(conn: sqlite3.Connection, name: str, edges: Sequence[float],
                 candidates: tuple[str, list]) -> list[RangeBucket]:
    """How many candidates fall in each bucket that `edges` cut numeric attribute `name` into."""
    sql, params = candidates
    cases = " ".join(f"WHEN value < ? THEN {i}" for i in range(len(edges)))
    counts = dict(conn.execute(
        f"""SELECT CASE {cases} ELSE {len(edges)} END AS bucket, COUNT(*) FROM numbers
            WHERE name = ? AND rid IN ({sql}) GROUP BY bucket""", [*edges, name, *params]))
    return [RangeBucket(key, low, high, counts.get(i, 0)) for i, (key, low, high) in enumerate(range_buckets(edges))]


def sorted_page(conn: sqlite3.Connection, query: SearchQuery, candidates: tuple[str, list]) -> list[tuple[str, float, tuple]]:
    """(id, 0, sort values) of the page of candidates in field-sort order (missing values last, ties by id), or
    in id order when browsing, after `query.after` (the previous page's last sort values) or from `query.offset`."""
    sql, params = candidates
    if query.sort_key is None:
        key_sql, descending = "d.id", False
    else:
        name, descending = query.sort_key
        key_sql = f"coalesce({SORT_SQL[name]}, {-MISSING_LAST if descending else MISSING_LAST})"
    page = f"SELECT id, k FROM (SELECT d.id AS id, {key_sql} AS k FROM docs d WHERE d.rid IN ({sql}))"
    args = list(params)
    if query.after is not None:
        if query.sort_key is None:
            page += " WHERE id > ?"
            args.append(query.after[0])
        else:
            page += f" WHERE k {'<' if descending else '>'} ? OR (k = ? AND id > ?)"
            args += [query.after[0], query.after[0], query.after[-1]]
    page += f" ORDER BY k{' DESC' if descending else ''}, id LIMIT ? OFFSET ?"
    args += [query.size, 0 if query.after is not None else query.offset]
    if query.sort_key is None:
        return [(pid, 0.0, (pid,)) for pid, _ in conn.execute(page, args)]
    return [(pid, 0.0, (key, pid)) for pid, key in conn.execute(page, args)]


def has_doc(conn: sqlite3.Connection, product_id: str) -> bool:
    return conn.execute("SELECT 1 FROM docs WHERE id = ?", (product_id,)).fetchone() is not None


def count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0]


def fingerprints(conn: sqlite3.Connection, ids: list[str]) -> dict[str, str]:
    return dict(conn.execute(
        "SELECT id, fingerprint FROM docs WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(ids),)))


def hits(conn: sqlite3.Connection, scored: Sequence[tuple[str, float, tuple]]) -> list[Hit]:
    """Hits for (id, score, sort values) in that order, with text, tag values, attributes and numbers."""
    ids = json.dumps([pid for pid, _, _ in scored])
    rows = {pid: (rid, title, description) for rid, pid, title, description in conn.execute(
        "SELECT rid, id, title, description FROM docs WHERE id IN (SELECT value FROM json_each(?))", (ids,))}
    rids = json.dumps([row[0] for row in rows.values()])
    tags: dict[int, dict[str, list[str]]] = {}
    for rid, family, value in conn.execute(
        """SELECT rid, family, value FROM tags WHERE rid IN (SELECT value FROM json_each(?))
           ORDER BY family, score DESC, value""", (rids,)):
        tags.setdefault(rid, {}).setdefault(family, []).append(value)
    attributes: dict[int, dict[str, str]] = {}
    for rid, name, value in conn.execute(
            "SELECT rid, name, value FROM attrs WHERE rid IN (SELECT value FROM json_each(?))", (rids,)):
        attributes.setdefault(rid, {})[name] = value
    numbers: dict[int, dict[str, float]] = {}
    for rid, name, value in conn.execute(
            "SELECT rid, name, value FROM numbers WHERE rid IN (SELECT value FROM json_each(?))", (rids,)):
        numbers.setdefault(rid, {})[name] = value
    out = []
    for pid, score, sort_values in scored:
        if pid not in rows:
            continue
        rid, title, description = rows[pid]
        out.append(Hit(id=pid, score=score, title=title, tags=tags.get(rid, {}), description=description,
                       attributes=attributes.get(rid, {}), numbers=numbers.get(rid, {}), sort_values=sort_values))
    return out
