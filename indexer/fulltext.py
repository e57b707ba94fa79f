"""The embedded search's full-text store: product rows, an FTS5 index of jieba-segmented text and the tag rows
behind filters and facets, in one SQLite database. Functions over the caller's connection, so the backend
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

import jieba

from .documents import Hit, SearchDoc
from .search_common import WORD, doc_fingerprint, tag_values

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
"""


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


def filter_sql(filters: dict[str, list[str]], rid: str = "rid") -> tuple[str, list[str]]:
    """SQL conditions (each starting with AND) keeping rows whose tags pass `filters`: OR within, AND across."""
    sql, params = "", []
    for family, values in sorted(filters.items()):
        marks = ",".join("?" * len(values))
        sql += f" AND {rid} IN (SELECT rid FROM tags WHERE family = ? AND value IN ({marks}))"
        params += [family, *values]
    return sql, params


# ---- writing ------------------------------------------------------------------------------------------------
def write_doc(conn: sqlite3.Connection, doc: SearchDoc) -> None:
    """Insert or replace one product's row, full-text entry and tags."""
    (rid,) = conn.execute(
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
    conn.execute("DELETE FROM docs_fts WHERE rowid = ?", (rid,))
    conn.execute(
        "INSERT INTO docs_fts (rowid, title, description, tags) VALUES (?, ?, ?, ?)",
        (rid, segment(doc.title, indexing=True), segment(doc.description, indexing=True), segment(tag_text, indexing=True)),
    )
    conn.execute("DELETE FROM tags WHERE rid = ?", (rid,))
    conn.executemany(
        "INSERT OR REPLACE INTO tags (rid, family, value, score, source) VALUES (?, ?, ?, ?, ?)",
        [(rid, family, t.value, t.score, t.source) for family, tags in doc.tags.items() for t in tags],
    )


def delete_doc(conn: sqlite3.Connection, product_id: str) -> bool:
    """Remove one product; False when it was not there."""
    row = conn.execute("DELETE FROM docs WHERE id = ? RETURNING rid", (product_id,)).fetchone()
    if row is None:
        return False
    conn.execute("DELETE FROM docs_fts WHERE rowid = ?", row)
    conn.execute("DELETE FROM tags WHERE rid = ?", row)
    return True


def clear(conn: sqlite3.Connection) -> None:
    for table in ("docs", "docs_fts", "tags"):
        conn.execute(f"DELETE FROM {table}")


# ---- reading ------------------------------------------------------------------------------------------------
def text_ranked(conn: sqlite3.Connection, match: str, filters: dict[str, list[str]], limit: int) -> list[tuple[str, float]]:
    """(id, bm25 score) of the products matching `match` and passing `filters`, best first."""
    # FTS5 must stay the outer loop: a tag filter pushed into it as a rowid constraint would re-run the
    # full-text match once per allowed product (seconds at 20k products); `+` and CROSS JOIN keep the filter a
    # check on each match instead
    sql, params = filter_sql(filters, "+d.rid")
    return conn.execute(
        f"""SELECT d.id, -{BM25} AS score FROM docs_fts CROSS JOIN docs d ON d.rid = docs_fts.rowid
            WHERE docs_fts MATCH ?{sql}
            ORDER BY score DESC, d.id LIMIT ?""",
        [match, *params, limit],
    ).fetchall()


def text_candidates(match: str, filters: dict[str, list[str]]) -> tuple[str, list]:
    """SQL (and its parameters) selecting the rids of every product `text_ranked` could return."""
    sql, params = filter_sql(filters, "+rowid")
    return f"SELECT rowid AS rid FROM docs_fts WHERE docs_fts MATCH ?{sql}", [match, *params]


def id_candidates(ids: Sequence[str]) -> tuple[str, list]:
    """SQL (and its parameters) selecting the rids of the products `ids`."""
    return "SELECT rid FROM docs WHERE id IN (SELECT value FROM json_each(?))", [json.dumps(list(ids))]


def filtered(conn: sqlite3.Connection, filters: dict[str, list[str]], limit: int) -> tuple[tuple[str, list], list[str]]:
    """Without text or vector: SQL selecting every product passing `filters`, and the first `limit` ids."""
    sql, params = filter_sql(filters)
    ids = [pid for (pid,) in conn.execute(f"SELECT id FROM docs WHERE 1{sql} ORDER BY id LIMIT ?", [*params, limit])]
    return (f"SELECT rid FROM docs WHERE 1{sql}", params), ids


def passing(conn: sqlite3.Connection, ids: Sequence[str], filters: dict[str, list[str]]) -> set[str]:
    """Which of `ids` pass `filters` (driven from the ids, checking the tags of each)."""
    sql, params = filter_sql(filters, "+rid")
    return {pid for (pid,) in conn.execute(
        f"SELECT id FROM docs WHERE id IN (SELECT value FROM json_each(?)){sql}", [json.dumps(list(ids)), *params])}


def count_and_facets(conn: sqlite3.Connection, parts: Sequence[tuple[str, list]], facets: Sequence[str],
                     facet_size: int) -> tuple[int, dict[str, list[tuple[str, int]]]]:
    """How many products the union of the candidate `parts` holds, and the top tag values of each facet family."""
    candidates = " UNION ".join(sql for sql, _ in parts)
    params = [p for _, ps in parts for p in ps]
    (total,) = conn.execute(f"SELECT COUNT(*) FROM ({candidates})", params).fetchone()
    counts = {
        family: [tuple(row) for row in conn.execute(
            f"""SELECT value, COUNT(*) AS n FROM tags WHERE family = ? AND rid IN ({candidates})
                GROUP BY value ORDER BY n DESC, value LIMIT ?""",
            [family, *params, facet_size])]
        for family in facets
    }
    return total, counts


def has_doc(conn: sqlite3.Connection, product_id: str) -> bool:
    return conn.execute("SELECT 1 FROM docs WHERE id = ?", (product_id,)).fetchone() is not None


def count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0]


def fingerprints(conn: sqlite3.Connection, ids: list[str]) -> dict[str, str]:
    return dict(conn.execute(
        "SELECT id, fingerprint FROM docs WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(ids),)))


def hits(conn: sqlite3.Connection, scored: Sequence[tuple[str, float]]) -> list[Hit]:
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
