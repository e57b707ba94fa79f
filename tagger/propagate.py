"""kNN tag propagation: a product's tag scores are the similarity-weighted vote of its nearest labelled
neighbours. Plain functions over arrays; the neighbours come from `VectorIndex.search`, which never returns
the product itself."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def select_labelled(neighbour_rows: np.ndarray, labelled: np.ndarray, k: int) -> np.ndarray:
    """Keep, per query, the first `k` neighbours that are labelled in the family; -1 pads.

    `neighbour_rows` (n, K) holds row numbers into the labelled set (-1 for none), best first;
    `labelled` is a boolean per labelled-set row. Searching K > k once and filtering per family avoids one
    index per family when families are labelled on different products.
    """
    valid = neighbour_rows >= 0
    keep = valid.copy()
    keep[valid] = labelled[neighbour_rows[valid]]
    rank = np.cumsum(keep, axis=1)
    keep &= rank <= k
    out = np.full((len(neighbour_rows), k), -1, dtype=np.int64)
    for row in range(len(neighbour_rows)):
        picked = neighbour_rows[row, keep[row]]
        out[row, : len(picked)] = picked
    return out


def gather_sims(neighbour_rows: np.ndarray, sims: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """The similarities matching `selected` (a subset of `neighbour_rows`, order kept); -inf pads."""
    out = np.full(selected.shape, -np.inf, dtype=np.float32)
    for row in range(len(selected)):
        position = {int(r): c for c, r in enumerate(neighbour_rows[row]) if r >= 0}
        for col, r in enumerate(selected[row]):
            if r >= 0:
                out[row, col] = sims[row, position[int(r)]]
    return out


def vote_weights(sims: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of similarity / temperature over each row's neighbours (padding -inf gets 0).

    A low temperature trusts the closest neighbour; a high one counts votes evenly.
    """
    logits = np.where(np.isfinite(sims), sims / temperature, -np.inf)
    top = np.max(logits, axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    weights = np.exp(logits - top)
    total = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)


def vote(neighbour_rows: np.ndarray, weights: np.ndarray, labels: sp.csr_matrix) -> np.ndarray:
    """(n, C) scores: Σ_j weight_j · labels[neighbour_j]. For a single-valued family each row sums to 1
    (0 without neighbours); for a multi-valued one each score is the weighted share of neighbours with the tag."""
    n, k = neighbour_rows.shape
    valid = neighbour_rows >= 0
    rows = np.repeat(np.arange(n), k)[valid.ravel()]
    cols = neighbour_rows[valid]
    w = sp.csr_matrix((weights[valid], (rows, cols)), shape=(n, labels.shape[0]))
    return np.asarray((w @ labels).todense(), dtype=np.float32)
