"""Stage: tags derived from what shoppers do, written to the store with source `behaviour`, always "needs
review", each with its evidence (docs/BEHAVIOUR.md).

- **Seasonal**: an item that sells far more of its volume in a season's months than the shop as a whole does
  gets the season as a tag (a "christmas" value for a September–December peak). Measured on the real gift-shop
  log, about a quarter of the items picked say Christmas in their title, against 5% of all selling items —
  good evidence for a person, not good enough to accept unseen, so a person decides.
- **Co-purchase near misses**: a product the tagger left "needs review" in a family, whose score for a value is
  just under that value's threshold while most of what it is bought with carries the value, gets that value
  proposed with the co-purchase share as evidence; the review queue puts it higher.

A person's decision (accept, correct, reject) turns either into feedback like any other; a family people have
tagged is never proposed to again. Both kinds are recomputed whole at every model build.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from shoptag.behaviour import demand
from shoptag.core.settings import BehaviourSettings
from shoptag.store.records import Store

DAY = 86400
SEASONS = {"christmas": (9, 10, 11, 12)}  # the trade builds from September (wholesalers stock up) to December
MIN_SPAN_DAYS = 180  # less than half a year of sales cannot show a season against the rest of the year
BOUGHT_WITH = 3  # co-bought products named in the evidence

DerivedTag = tuple[str, str, str, float | None, dict]  # (product, family, value, score, evidence)


@dataclass
class DerivedReport:
    seasonal: int = 0
    copurchase: int = 0


def seasonal_tags(item_ids: np.ndarray, items: np.ndarray, times: np.ndarray, quantity: np.ndarray,
                  settings: BehaviourSettings) -> list[DerivedTag]:
    """A season's value for every item selling at least `seasonal_min_units` with a lift of at least
    `seasonal_min_lift` in that season's months; evidence: its monthly share of units, its season share, the
    shop's, the lift. `items` are catalog positions of purchase events."""
    if not len(times) or int(times.max() - times.min()) < MIN_SPAN_DAYS * DAY:
        return []
    monthly = demand.monthly_units(items, times, quantity, len(item_ids))
    out: list[DerivedTag] = []
    for season, months in SEASONS.items():
        total, lift, share, shop_share = demand.season_shares(monthly, months)
        for i in np.flatnonzero((total >= settings.seasonal_min_units) & (lift >= settings.seasonal_min_lift)):
            out.append((str(item_ids[i]), settings.seasonal_family, season, None, {
                "derived": "seasonal", "season": season, "months": list(months), "units": round(float(total[i]), 1),
                "monthly_share": [round(float(x), 3) for x in monthly[i] / total[i]],
                "season_share": round(float(share[i]), 3), "shop_season_share": round(shop_share, 3),
                "lift": round(float(lift[i]), 2)}))
    return out


def near_miss_tags(store: Store, item_ids: np.ndarray, position: Mapping[str, int], similarity: sp.csr_matrix,
                   settings: BehaviourSettings) -> list[DerivedTag]:
    """Values the tagger scored within `near_miss_margin` under their threshold on a product it left "needs
    review", when at least `near_miss_min_share` of the product's co-purchase weight goes to products whose
    accepted tags carry the value."""
    tagged: dict[tuple[str, str], list[int]] = {}
    for pid, families in store.effective_tags().items():
        if pid in position:
            for family, values in families.items():
                for value, _, _ in values:
                    tagged.setdefault((family, value), []).append(position[pid])
    # per (family, value): the candidates' (product position, tagger score) and the value's threshold
    candidates: dict[tuple[str, str], tuple[list[int], list[float], float]] = {}
    for pid, family, evidence in store.model_review_evidence():
        if pid not in position:
            continue
        for c in evidence.get("candidates", []):
            if c.get("threshold") is not None and (family, c["value"]) in tagged:
                rows, scores, _ = candidates.setdefault((family, c["value"]), ([], [], float(c["threshold"])))
                rows.append(position[pid])
                scores.append(float(c["score"]))
    out: list[DerivedTag] = []
    for (family, value), (rows, scores, threshold) in sorted(candidates.items()):
        has_tag = np.zeros(len(item_ids))
        has_tag[tagged[(family, value)]] = 1.0
        score = np.full(len(item_ids), -np.inf)
        score[rows] = scores
        share = demand.copurchase_share(similarity, has_tag)
        for i in demand.near_miss(score, threshold, share, settings.near_miss_margin, settings.near_miss_min_share):
            out.append((str(item_ids[i]), family, value, float(score[i]), {
                "derived": "copurchase", "share": round(float(share[i]), 3), "tagger_score": float(score[i]),
                "threshold": threshold, "bought_with": _bought_with(similarity, i, has_tag, item_ids)}))
    return out


def _bought_with(similarity: sp.csr_matrix, row: int, has_tag: np.ndarray, item_ids: np.ndarray) -> list[dict]:
    """The products carrying the value that `row` is most co-purchased with."""
    start, end = similarity.indptr[row], similarity.indptr[row + 1]
    cols, weights = similarity.indices[start:end], similarity.data[start:end]
    keep = has_tag[cols] > 0
    cols, weights = cols[keep], weights[keep]
    order = np.argsort(-weights, kind="stable")[:BOUGHT_WITH]
    return [{"id": str(item_ids[cols[j]]), "weight": round(float(weights[j]), 4)} for j in order]


def derive(store: Store, item_ids: np.ndarray, position: Mapping[str, int], similarity: sp.csr_matrix,
           purchases: Sequence[np.ndarray], settings: BehaviourSettings) -> DerivedReport:
    """Recompute both kinds and replace them in the store; `purchases`: (catalog positions, times, quantities)
    of the purchase events."""
    items, times, quantity = purchases
    report = DerivedReport()
    report.seasonal = store.replace_derived_tags("seasonal", seasonal_tags(item_ids, items, times, quantity, settings))
    report.copurchase = store.replace_derived_tags(
        "copurchase", near_miss_tags(store, item_ids, position, similarity, settings))
    return report
