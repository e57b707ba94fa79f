"""Offline evaluation of recommendations on a time split: plain functions over arrays.

The split: events before `cutoff` train; for every user who bought before the cutoff and buys after it, the
first basket after the cutoff is the truth ("next basket"). Recall@k = hits / basket size, nDCG@10 with binary
relevance; cold items (no event before the cutoff) are scored separately, since only content can reach them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NextBasket:
    user: int
    items: np.ndarray  # item indices of the basket (unique)


def next_baskets(user: np.ndarray, basket: np.ndarray, items: np.ndarray, times: np.ndarray, cutoff: int,
                 horizon: int) -> list[NextBasket]:
    """First basket in [cutoff, cutoff + horizon) of each user who has events before the cutoff."""
    known = set(np.unique(user[(times < cutoff) & (user >= 0)]).tolist())
    window = (times >= cutoff) & (times < cutoff + horizon) & (user >= 0)
    first: dict[int, tuple[int, int]] = {}
    for u, b, t in zip(user[window].tolist(), basket[window].tolist(), times[window].tolist(), strict=True):
        if u in known and (u not in first or (t, b) < first[u]):
            first[u] = (t, b)
    out = []
    for u, (_, b) in sorted(first.items()):
        mask = window & (user == u) & (basket == b)
        out.append(NextBasket(u, np.unique(items[mask])))
    return out


def recall_at(recommended: np.ndarray, truth: np.ndarray, k: int) -> float:
    if not len(truth):
        return float("nan")
    return len(np.intersect1d(recommended[:k], truth)) / len(truth)


def ndcg_at(recommended: np.ndarray, truth: np.ndarray, k: int) -> float:
    if not len(truth):
        return float("nan")
    hits = np.isin(recommended[:k], truth).astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = discounts[: min(len(truth), k)].sum()
    return float((hits * discounts[: len(hits)]).sum() / ideal)


def coverage(lists: list[np.ndarray], n_items: int) -> float:
    """Share of the catalog that appears in at least one list."""
    if not lists or not n_items:
        return 0.0
    return len(np.unique(np.concatenate(lists))) / n_items
