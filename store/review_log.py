"""The review log: every decision a person takes in the review console, in the store's SQLite file.

A decision is written as feedback (the same row `shoptag feedback` writes, so it is never overwritten by the
model and trains the next one) plus an audit row: who, when, what it replaced (the family's tags before it,
verbatim), the model's top candidate then. Undo puts the replaced tags back, drops the decision's feedback row
and marks the decision undone (by whom, when): the audit trail keeps it.

Audits draw auto-accepted model tags into the queue so that people measure their precision.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from shoptag.core.errors import Conflict, NotFound

from .records import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS review_decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id TEXT NOT NULL,
    family TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('accept', 'correct', 'reject')),
    value_list TEXT NOT NULL,   -- JSON list: the values the reviewer set ([] = none applies)
    replaced TEXT NOT NULL,     -- JSON list of the family's tag rows before the decision
    model_values TEXT NOT NULL, -- JSON list: the model's top candidate (review) or accepted values (audit)
    feedback_seq INTEGER NOT NULL,
    reviewer TEXT NOT NULL,
    audit_id INTEGER,
    created_at REAL NOT NULL,
    undone_at REAL,
    undone_by TEXT
);
CREATE INDEX IF NOT EXISTS review_decisions_by_item ON review_decisions(product_id, family);
CREATE TABLE IF NOT EXISTS audits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    family TEXT NOT NULL,
    strata TEXT NOT NULL,       -- JSON: per stratum, its score range and how many auto-accepted tags it holds
    estimate REAL NOT NULL,     -- the calibrated precision the model claims: mean score of the accepted tags
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_items (
    audit_id INTEGER NOT NULL REFERENCES audits(id),
    product_id TEXT NOT NULL,
    family TEXT NOT NULL,
    value_list TEXT NOT NULL,   -- JSON list: the model's accepted values when drawn
    score REAL NOT NULL,
    stratum INTEGER NOT NULL,
    PRIMARY KEY (audit_id, product_id, family)
) WITHOUT ROWID;
"""


class UndoRefused(Conflict):
    """The decision is unknown, already undone, or a later decision on the same tag family must go first."""


@dataclass(frozen=True)
class TagRow:
    value: str
    source: str
    status: str
    score: float | None
    evidence: dict | None


@dataclass(frozen=True)
class Decision:
    id: int
    product_id: str
    family: str
    action: str
    values: list[str]
    replaced: list[TagRow]
    model_values: list[str]
    reviewer: str
    audit_id: int | None
    created_at: float
    undone_at: float | None


@dataclass(frozen=True)
class ReviewRow:
    """One (product, family) waiting for a person: the model's value(s) there and its (lowest) score, and the
    values behaviour proposes there (after the model's)."""

    product_id: str
    family: str
    values: list[str]  # "needs review": the top candidate; an audit draw: the values the model accepted
    score: float
    audit_id: int | None  # set when the row was drawn by an audit (its tags are auto-accepted)
    copurchase: float = 0.0  # the largest co-purchase share of a value behaviour proposes here (0: none)
    derived_only: bool = False  # every value comes from behaviour: no calibrated score (never bulk-accepted)


UNSCORED = 0.5  # a tag derived from behaviour without a calibrated score counts as a coin toss in the queue


def open_review_log(store: Store) -> ReviewLog:
    with store.transaction() as db:
        for statement in SCHEMA.split(";\n"):
            if statement.strip():
                db.execute(statement)
    return ReviewLog(store)


def _rows(db: sqlite3.Connection, product_id: str, family: str) -> list[TagRow]:
    return [
        TagRow(v, src, status, score, json.loads(ev) if ev else None)
        for v, src, status, score, ev in db.execute(
            "SELECT value, source, status, score, evidence FROM tags WHERE product_id = ? AND family = ? "
            "ORDER BY source, score DESC", (product_id, family))
    ]


class ReviewLog:
    """Reads and writes of the review tables; obtain one with `open_review_log` (creates the tables)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- the queue ------------------------------------------------------------------------------------------
    def pending(self, product_ids: Sequence[str] | None = None) -> list[ReviewRow]:
        """Every model "needs review" family, and every audit draw nobody has decided yet (of `product_ids` only,
        when given). Evidence is left out: `evidence` reads it for the few items a page shows."""
        review_sql = ("SELECT product_id, family, value, score, source, json_extract(evidence, '$.share') FROM tags "
                      "WHERE status = 'review' AND source IN ('model', 'behaviour')")
        audit_sql = (
            "SELECT a.audit_id, a.product_id, a.family, t.value, t.score FROM audit_items a "
            "JOIN tags t ON t.product_id = a.product_id AND t.family = a.family AND t.source = 'model' "
            "AND t.status = 'accepted' "
            "WHERE NOT EXISTS (SELECT 1 FROM review_decisions d WHERE d.audit_id = a.audit_id "
            "AND d.product_id = a.product_id AND d.family = a.family AND d.undone_at IS NULL)")
        if product_ids is None:
            review, audit = self.store.read(review_sql), self.store.read(audit_sql)
        else:
            review = self.store.rows_for(review_sql + " AND product_id IN ({ids})", product_ids)
            audit = self.store.rows_for(audit_sql + " AND a.product_id IN ({ids})", product_ids)
        # the model's rows first in each group: "accept" takes the first value. The score is the model's lowest;
        # behaviour's values add their co-purchase share, and give the score only where the model has no row
        review = sorted(review, key=lambda r: r[4] != "model")
        grouped: dict[tuple[str, str, int | None], dict] = {}
        for audit_id, pid, family, value, score, source, share in (
                [(None, *r) for r in review] + [(*r, "model", None) for r in audit]):
            group = grouped.setdefault((pid, family, audit_id), {"values": [], "model": [], "derived": [], "share": 0.0})
            group["values"].append(value)
            if source == "model":
                group["model"].append(1.0 if score is None else score)
            else:
                group["derived"].append(UNSCORED if score is None else score)
                group["share"] = max(group["share"], share or 0.0)
        return [ReviewRow(pid, family, g["values"], min(g["model"] or g["derived"]), audit_id, g["share"],
                          not g["model"])
                for (pid, family, audit_id), g in sorted(grouped.items(), key=lambda kv: kv[0][:2])]

    def evidence(self, rows: Sequence[ReviewRow]) -> list[dict]:
        """The stored evidence of each row's best model tag ({} when it has none)."""
        found: dict[tuple[str, str], dict] = {}
        for pid, family, ev in self.store.rows_for(
                "SELECT product_id, family, evidence FROM tags WHERE source = 'model' AND product_id IN ({ids}) "
                "ORDER BY score", sorted({r.product_id for r in rows})):
            found[(pid, family)] = json.loads(ev) if ev else {}  # the highest score comes last and wins
        return [found.get((r.product_id, r.family), {}) for r in rows]

    def behaviour_evidence(self, rows: Sequence[ReviewRow]) -> list[list[dict]]:
        """Per row, the values behaviour proposes in its family, each with its evidence (`value` added)."""
        found: dict[tuple[str, str], list[dict]] = {}
        for pid, family, value, ev in self.store.rows_for(
                "SELECT product_id, family, value, evidence FROM tags WHERE source = 'behaviour' AND status = 'review' "
                "AND product_id IN ({ids}) ORDER BY value", sorted({r.product_id for r in rows})):
            found.setdefault((pid, family), []).append({"value": value, **(json.loads(ev) if ev else {})})
        return [found.get((r.product_id, r.family), []) if r.audit_id is None else [] for r in rows]

    # ---- decisions ------------------------------------------------------------------------------------------
    def decide(
        self, items: Sequence[tuple[str, str, str, Sequence[str], int | None]], reviewer: str
    ) -> list[int]:
        """Record decisions (product, family, action, values, audit id) in one transaction: each becomes
        feedback, and an audit row keeps what it replaced. Returns the decision ids."""
        ids = []
        now = time.time()
        with self.store.transaction() as db:
            for product_id, family, action, values, audit_id in items:
                before = _rows(db, product_id, family)
                model_values = [t.value for t in before if t.source == "model"][:1] if audit_id is None else [
                    t.value for t in before if t.source == "model"]
                seq = self.store.write_feedback(db, product_id, family, values, origin=f"review:{reviewer}")
                cur = db.execute(
                    "INSERT INTO review_decisions (product_id, family, action, value_list, replaced, model_values, "
                    "feedback_seq, reviewer, audit_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (product_id, family, action, json.dumps(list(values), ensure_ascii=False),
                     json.dumps([t.__dict__ for t in before], ensure_ascii=False),
                     json.dumps(model_values, ensure_ascii=False), seq, reviewer, audit_id, now),
                )
                ids.append(int(cur.lastrowid))
        return ids

    def undo(self, decision_id: int, who: str) -> Decision:
        """Put back what the decision replaced. Refused when a later decision on the same family stands."""
        with self.store.transaction() as db:
            row = db.execute(
                "SELECT product_id, family, feedback_seq, replaced, undone_at FROM review_decisions WHERE id = ?",
                (decision_id,)).fetchone()
            if row is None:
                raise NotFound(f"no review decision {decision_id}")
            product_id, family, seq, replaced, undone_at = row
            if undone_at is not None:
                raise UndoRefused(f"decision {decision_id} is already undone")
            latest = db.execute("SELECT MAX(seq) FROM feedback WHERE product_id = ? AND family = ?",
                                (product_id, family)).fetchone()[0]
            if latest != seq:
                raise UndoRefused(f"a later correction of {product_id} / {family} stands: undo that one first")
            now = time.time()
            db.execute("DELETE FROM feedback WHERE seq = ?", (seq,))
            db.execute("DELETE FROM tags WHERE product_id = ? AND family = ? AND source IN ('feedback', 'model', "
                       "'behaviour')",
                       (product_id, family))
            db.executemany(
                "INSERT INTO tags (product_id, family, value, source, status, score, evidence, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(product_id, family, t["value"], t["source"], t["status"], t["score"],
                  json.dumps(t["evidence"], ensure_ascii=False) if t["evidence"] is not None else None, now)
                 for t in json.loads(replaced) if t["source"] in ("feedback", "model", "behaviour")],
            )
            db.execute("UPDATE review_decisions SET undone_at = ?, undone_by = ? WHERE id = ?", (now, who, decision_id))
        return self.decision(decision_id)

    def last_decision(self, reviewer: str) -> int | None:
        """The reviewer's latest decision that still stands."""
        rows = self.store.read("SELECT MAX(id) FROM review_decisions WHERE reviewer = ? AND undone_at IS NULL",
                               (reviewer,))
        return rows[0][0]

    def decision(self, decision_id: int) -> Decision:
        found = self.decisions(where="id = ?", params=(decision_id,))
        if not found:
            raise NotFound(f"no review decision {decision_id}")
        return found[0]

    def decisions(self, where: str = "1", params: Sequence = ()) -> list[Decision]:
        rows = self.store.read(
            "SELECT id, product_id, family, action, value_list, replaced, model_values, reviewer, audit_id, "
            f"created_at, undone_at FROM review_decisions WHERE {where} ORDER BY id", params)
        return [
            Decision(r[0], r[1], r[2], r[3], json.loads(r[4]), [TagRow(**t) for t in json.loads(r[5])],
                     json.loads(r[6]), r[7], r[8], r[9], r[10])
            for r in rows
        ]

    # ---- audits ---------------------------------------------------------------------------------------------
    def accepted_model_tags(self, family: str) -> list[tuple[str, list[str], float]]:
        """(product, values, lowest score) of every product whose `family` the model auto-accepted."""
        rows = self.store.read(
            "SELECT product_id, value, score FROM tags WHERE family = ? AND source = 'model' AND status = 'accepted' "
            "ORDER BY product_id, value", (family,))
        out: dict[str, tuple[list[str], float]] = {}
        for pid, value, score in rows:
            values, low = out.get(pid, ([], 1.0))
            out[pid] = ([*values, value], min(low, score if score is not None else 1.0))
        return [(pid, values, low) for pid, (values, low) in out.items()]

    def add_audit(self, family: str, strata: list[dict], estimate: float,
                  items: Sequence[tuple[str, list[str], float, int]]) -> int:
        with self.store.transaction() as db:
            audit_id = int(db.execute(
                "INSERT INTO audits (family, strata, estimate, created_at) VALUES (?, ?, ?, ?)",
                (family, json.dumps(strata), estimate, time.time())).lastrowid)
            db.executemany(
                "INSERT INTO audit_items (audit_id, product_id, family, value_list, score, stratum) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(audit_id, pid, family, json.dumps(values, ensure_ascii=False), score, stratum)
                 for pid, values, score, stratum in items])
        return audit_id

    def audits(self) -> list[tuple[int, str, list[dict], float, float]]:
        """(id, family, strata, calibrated estimate, created_at) of every audit."""
        return [(r[0], r[1], json.loads(r[2]), r[3], r[4])
                for r in self.store.read("SELECT id, family, strata, estimate, created_at FROM audits ORDER BY id")]

    def audit_items(self, audit_id: int) -> list[tuple[str, list[str], int]]:
        """(product, the model's values when drawn, stratum) of one audit's draw."""
        return [(r[0], json.loads(r[1]), r[2]) for r in self.store.read(
            "SELECT product_id, value_list, stratum FROM audit_items WHERE audit_id = ? ORDER BY product_id",
            (audit_id,))]
