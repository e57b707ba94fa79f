"""The review queue and the decisions people take on it (CLI `shoptag review`, HTTP `/review`, the web page).

The queue holds every family the model left "needs review" and every auto-accepted tag an audit drew, ordered by
the expected value of a decision: the chance the model's best guess is wrong (1 − its calibrated score) times the
product's traffic where behaviour data gives one, the families taking turns. A decision is feedback (never
overwritten by the model, a training label from then on) with an audit row: who, when, what it replaced.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from shoptag.core.errors import BadInput
from shoptag.store.review_log import Decision, ReviewLog
from shoptag.store.records import Store

from .workspace import Workspace

ACTIONS = ("accept", "correct", "reject")
HOUR = 3600.0
AUDIT_STRATA = 4


class ReviewError(BadInput):
    """A decision that cannot be applied: unknown product, nothing to accept, a bad action or values."""


@dataclass
class QueueItem:
    product_id: str
    family: str
    kind: str  # "review": the model was not sure; "audit": an auto-accepted tag drawn to be checked
    title: str
    has_image: bool
    candidates: list[dict]  # [{"value", "score"}], best first
    score: float  # the top candidate's calibrated score
    threshold: float | None
    sources: dict[str, float]
    neighbours: list[dict]  # [{"id", "weight", "title"}]
    priority: float
    audit_id: int | None = None
    behaviour: list[dict] = field(default_factory=list)  # values behaviour proposes here, each with its evidence


@dataclass
class DecisionIn:
    product_id: str
    family: str
    action: str
    values: list[str] = field(default_factory=list)  # for "correct": the right values


def priority(scores: np.ndarray, traffic: np.ndarray | None = None, copurchase: np.ndarray | None = None
             ) -> np.ndarray:
    """Expected value of a decision: uncertainty (1 − calibrated top score: the chance the model's best guess is
    wrong) × (1 + traffic) × (1 + co-purchase share), so products shoppers see come first, then those whose
    co-purchases say the model narrowly missed a tag, and, without behaviour data, the least sure."""
    value = 1.0 - np.clip(scores, 0.0, 1.0)
    if traffic is not None:
        value = value * (1.0 + np.asarray(traffic, dtype=np.float64))
    if copurchase is not None:
        value = value * (1.0 + np.asarray(copurchase, dtype=np.float64))
    return value


def traffic(workspace: Workspace) -> dict[str, float] | None:
    """Demand per product where behaviour data exists: the behaviour model's decayed popularity (0–1, saved by
    `pipeline.recommend`); None without one. Only those two arrays of the saved file are read."""
    if not workspace.recs_path.is_file():
        return None
    with np.load(workspace.recs_path, allow_pickle=False) as data:
        return dict(zip(data["item_ids"].astype(str).tolist(), data["popularity"].astype(float).tolist()))


def queue(
    store: Store, log: ReviewLog, *, family: str | None = None, tag: str | None = None, limit: int = 50,
    offset: int = 0, traffic: Mapping[str, float] | None = None,
) -> tuple[list[QueueItem], int]:
    """One page of the queue and how many items match in all: audit draws first, then the families take turns,
    each turn by expected value (every family's most valuable item, then every family's second, …), so a page
    of decisions teaches every family, not only the one whose scores run lowest (a family of 143 values always
    has lower top scores than one of 5). `tag` keeps the items whose top candidate is that value."""
    rows = [r for r in log.pending() if (family is None or r.family == family) and (tag is None or r.values[0] == tag)]
    tops = np.array([r.score for r in rows], dtype=np.float64)
    views = None if traffic is None else np.array([traffic.get(r.product_id, 0.0) for r in rows])
    value = priority(tops, views, np.array([r.copurchase for r in rows], dtype=np.float64))
    order = sorted(range(len(rows)), key=lambda i: (rows[i].audit_id is None, -value[i], rows[i].product_id, rows[i].family))
    turn: dict[str, int] = {}
    rank = [0] * len(rows)
    for i in order:  # the position of each item within its family's own order
        rank[i] = turn[rows[i].family] = turn.get(rows[i].family, -1) + 1
    order.sort(key=lambda i: (rows[i].audit_id is None, rank[i]))  # stable: by value within a turn
    page = [rows[i] for i in order[offset : offset + limit]]
    values = [float(value[i]) for i in order[offset : offset + limit]]
    evidence = log.evidence(page) if page else []
    derived = log.behaviour_evidence(page) if page else []
    products = {p.id: p for p in store.products(sorted({r.product_id for r in page}))}
    voters = sorted({n["id"] for ev in evidence for n in ev.get("neighbours", [])})
    titles = {p.id: p.title for p in store.products(voters)} if voters else {}
    items = []
    for row, ev, v, proposed in zip(page, evidence, values, derived):
        product = products.get(row.product_id)
        if product is None:
            continue
        candidates = ev.get("candidates") if row.audit_id is None else None
        items.append(QueueItem(
            row.product_id, row.family, "review" if row.audit_id is None else "audit", product.title,
            bool(product.image), candidates or [{"value": x, "score": round(row.score, 4)} for x in row.values],
            round(row.score, 4), ev.get("threshold"), ev.get("sources", {}),
            [{**n, "title": titles.get(n["id"], "")} for n in ev.get("neighbours", [])], round(v, 6), row.audit_id,
            proposed,
        ))
    return items, len(rows)


def decide(store: Store, log: ReviewLog, decisions: Sequence[DecisionIn], reviewer: str) -> list[int]:
    """Apply decisions, all or none: accept takes the model's top candidate (or, for an audit draw, the values it
    accepted), correct sets the given values, reject says none applies. Returns the decision ids."""
    pending = {(r.product_id, r.family): r for r in log.pending(sorted({d.product_id for d in decisions}))}
    items = []
    for d in decisions:
        if d.action not in ACTIONS:
            raise ReviewError(f"{d.product_id} / {d.family}: action must be one of {', '.join(ACTIONS)}, not {d.action!r}")
        if not store.has_product(d.product_id):
            raise ReviewError(f"unknown product id {d.product_id!r}")
        row = pending.get((d.product_id, d.family))
        values = [v.strip() for v in d.values if v.strip()]
        if d.action == "accept":
            if row is None:
                raise ReviewError(f"{d.product_id} / {d.family} is not in the review queue: nothing to accept")
            values = row.values[:1] if row.audit_id is None else row.values
        elif d.action == "correct" and not values:
            raise ReviewError(f"{d.product_id} / {d.family}: a correction needs values (reject says none applies)")
        elif d.action == "reject":
            values = []
        items.append((d.product_id, d.family, d.action, list(dict.fromkeys(values)), row.audit_id if row else None))
    return log.decide(items, reviewer)


def undo(log: ReviewLog, reviewer: str, decision_id: int | None = None) -> Decision:
    """Undo one decision (default: the reviewer's latest that stands)."""
    target = decision_id if decision_id is not None else log.last_decision(reviewer)
    if target is None:
        raise ReviewError(f"{reviewer} has no decision to undo")
    return log.undo(target, reviewer)


def bulk_targets(log: ReviewLog, family: str, min_score: float, tag: str | None = None) -> list[tuple[str, str]]:
    """(product, family) of every queued "needs review" item of `family` whose top candidate (optionally `tag`)
    scores at least `min_score`; tags derived from behaviour alone have no calibrated score and are left to a
    person's look."""
    return [(r.product_id, r.family) for r in log.pending() if r.audit_id is None and r.family == family
            and not r.derived_only
            and round(r.score, 4) >= min_score and (tag is None or r.values[0] == tag)]


def bulk_accept(store: Store, log: ReviewLog, targets: Sequence[tuple[str, str]], reviewer: str) -> list[int]:
    """Accept the top candidate of each of `targets` (see `bulk_targets`)."""
    return decide(store, log, [DecisionIn(pid, family, "accept") for pid, family in targets], reviewer) if targets else []


# ---- reviewer metrics -----------------------------------------------------------------------------------------
def _agrees(d: Decision) -> bool:
    return sorted(d.values) == sorted(d.model_values)


def per_hour(times: Sequence[float], now: float) -> float:
    """Decisions per hour over the last hour (or since the first decision, when that is more recent, at least a
    minute), so the pace shows after a few decisions."""
    recent = [t for t in times if t > now - HOUR]
    if not recent:
        return 0.0
    span = max(min(HOUR, now - min(recent)), 60.0)
    return len(recent) * HOUR / span


def stats(store: Store, log: ReviewLog, now: float | None = None) -> dict:
    """Reviewer metrics: decisions per hour, agreement of the model's top candidate with the reviewer, per
    family and per reviewer; queue sizes; audits with the precision people measured beside the calibrated one."""
    now = time.time() if now is None else now
    standing = log.decisions(where="undone_at IS NULL")
    families: dict[str, dict] = {}
    for d in standing:
        f = families.setdefault(d.family, {"decisions": 0, "accept": 0, "correct": 0, "reject": 0, "agree": 0})
        f["decisions"] += 1
        f[d.action] += 1
        f["agree"] += _agrees(d)
    for f in families.values():
        f["agreement"] = round(f.pop("agree") / f["decisions"], 4)
    reviewers: dict[str, list[float]] = {}
    for d in standing:
        reviewers.setdefault(d.reviewer, []).append(d.created_at)
    queued: dict[str, int] = {}
    for r in log.pending():
        queued[r.family] = queued.get(r.family, 0) + 1
    return {
        "decisions": len(standing),
        "per_hour": round(per_hour([d.created_at for d in standing], now), 1),
        "agreement": round(sum(map(_agrees, standing)) / len(standing), 4) if standing else None,
        "families": families,
        "reviewers": {name: {"decisions": len(t), "per_hour": round(per_hour(t, now), 1)} for name, t in reviewers.items()},
        "queue": dict(sorted(queued.items())),
        "audits": [audit_result(log, audit_id) for audit_id, *_ in log.audits()],
    }


# ---- sampling audits ------------------------------------------------------------------------------------------
def draw_audit(log: ReviewLog, family: str, n: int, seed: int = 13) -> dict:
    """Draw `n` auto-accepted tags of `family` into the queue, stratified by score (equal-count score strata,
    proportional allocation), so people measure the precision of what is accepted without them."""
    accepted = log.accepted_model_tags(family)
    if not accepted:
        raise ReviewError(f"the model auto-accepted no tag in family {family!r}: nothing to audit")
    scores = np.array([s for _, _, s in accepted])
    order = np.argsort(scores, kind="stable")
    strata_rows = [s for s in np.array_split(order, min(AUDIT_STRATA, len(order))) if len(s)]
    rng = np.random.default_rng(seed)
    take = min(n, len(accepted))
    quotas = [len(s) * take / len(accepted) for s in strata_rows]
    counts = [int(math.floor(q)) for q in quotas]
    for i in np.argsort([c - q for c, q in zip(counts, quotas)])[: take - sum(counts)]:
        counts[i] += 1
    items, strata = [], []
    for h, (rows, count) in enumerate(zip(strata_rows, counts)):
        strata.append({"stratum": h, "population": len(rows), "drawn": count,
                       "score_min": round(float(scores[rows].min()), 4), "score_max": round(float(scores[rows].max()), 4)})
        for r in rng.choice(rows, size=count, replace=False):
            pid, values, score = accepted[int(r)]
            items.append((pid, values, score, h))
    estimate = float(scores.mean())
    audit_id = log.add_audit(family, strata, estimate, items)
    return {"audit": audit_id, "family": family, "drawn": len(items), "population": len(accepted),
            "calibrated_precision": round(estimate, 4), "strata": strata}


def audit_result(log: ReviewLog, audit_id: int) -> dict:
    """What people found: the stratified precision of the auto-accepted tags (strata weighted by their share of
    the population) with a 95% interval, beside the calibrated estimate the model claims."""
    (_, family, strata, estimate, _), = [a for a in log.audits() if a[0] == audit_id]
    drawn = {pid: (values, stratum) for pid, values, stratum in log.audit_items(audit_id)}
    right: dict[int, list[bool]] = {}
    for d in log.decisions(where="audit_id = ? AND undone_at IS NULL", params=(audit_id,)):
        values, stratum = drawn[d.product_id]
        right.setdefault(stratum, []).append(sorted(d.values) == sorted(values))
    reviewed = sum(len(v) for v in right.values())
    result = {"audit": audit_id, "family": family, "drawn": len(drawn), "reviewed": reviewed,
              "calibrated_precision": round(estimate, 4), "measured_precision": None, "interval95": None}
    if reviewed:
        weights = {s["stratum"]: s["population"] for s in strata if s["stratum"] in right}
        total = sum(weights.values())
        p = {h: float(np.mean(v)) for h, v in right.items()}
        precision = sum(weights[h] / total * p[h] for h in right)
        var = sum((weights[h] / total) ** 2 * p[h] * (1 - p[h]) / len(right[h]) for h in right)
        half = 1.96 * math.sqrt(var)
        result.update(measured_precision=round(precision, 4),
                      interval95=[round(max(0.0, precision - half), 4), round(min(1.0, precision + half), 4)])
    return result
