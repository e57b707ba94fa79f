"""Diversity re-ranks for a ranked list of products, so near-duplicates do not fill a page.

Both are pure functions of the ranked list (and its vectors or tags) and return the new order as positions into
it; every backend applies them the same way, after retrieval and before paging.

- `mmr_order`: maximal marginal relevance (Carbonell & Goldstein, 1998). Each next product maximises
  ``lambda * relevance - (1 - lambda) * max cosine similarity to the products already picked``. Relevance is the
  rank-based score ``1 / (1 + position)`` scaled to [0, 1], so it does not depend on a backend's score scale.
- `capped_order`: at most `max_per_value` products per value of one tag family in each page-sized block; the
  products pushed out move down, in their order, rather than disappear.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mmr_order(vectors: np.ndarray, lambda_: float = 0.7, limit: int | None = None) -> list[int]:
    """Positions of the ranked rows of `vectors` (best first) in MMR order, the first `limit` of them (all when None).

    A row of zeros (a product without a vector) is similar to nothing and keeps its relevance.
    """
    n = len(vectors)
    limit = n if limit is None else min(limit, n)
    if n == 0 or limit == 0:
        return []
    unit = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(unit, axis=1, keepdims=True)
    unit = np.divide(unit, norms, out=np.zeros_like(unit), where=norms > 0)
    relevance = 1.0 / (1.0 + np.arange(n, dtype=np.float64))
    closest = np.zeros(n)  # max similarity of each row to the rows picked so far
    taken = np.zeros(n, dtype=bool)
    order: list[int] = []
    for _ in range(limit):
        gain = lambda_ * relevance - (1.0 - lambda_) * closest
        gain[taken] = -np.inf
        best = int(np.argmax(gain))  # ties: the earlier position
        order.append(best)
        taken[best] = True
        closest = np.maximum(closest, unit @ unit[best])
    return order


def capped_order(values: Sequence[Sequence[str]], max_per_value: int, block: int) -> list[int]:
    """Positions of a ranked list in an order where each block of `block` places holds at most `max_per_value`
    products sharing a value, where the list allows it (a product counts for each of its values; one without
    values is never capped).

    Products that do not fit a block wait, in rank order, for the next one. A block that cannot be filled within
    the cap is topped up with the best waiting products, so blocks stay page-aligned and the result is always a
    permutation.
    """
    if max_per_value < 1 or block < 1:
        raise ValueError("max_per_value and block must be at least 1")
    waiting = list(range(len(values)))
    order: list[int] = []
    while waiting:
        counts: dict[str, int] = {}
        picked: list[int] = []
        for position in waiting:
            if len(picked) == block:
                break
            if all(counts.get(v, 0) < max_per_value for v in values[position]):
                for v in values[position]:
                    counts[v] = counts.get(v, 0) + 1
                picked.append(position)
        chosen = set(picked)
        picked += [p for p in waiting if p not in chosen][: block - len(picked)]
        order += picked
        chosen = set(picked)
        waiting = [p for p in waiting if p not in chosen]
    return order
