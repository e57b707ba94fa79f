"""kNN tag propagation: a product's tag scores are the similarity-weighted vote of its nearest labelled
neighbours. Plain functions over arrays; the neighbours come from `VectorIndex.search`, which never returns
the product itself."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def select_labelled(
    neighbour_rows: np.ndarray, sims: np.ndarray, labelled: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keep, per query, the first `k` neighbours that are labelled in the family: (rows, float32 similarities),
    -1 / -inf padding.

    `neighbour_rows` (n, K) holds row numbers into the labelled set (-1 for none), best first, `sims` their
    similarities; `labelled` is a boolean per labelled-set row. Searching K > k once and filtering per family
    avoids one index per family when families are labelled on different products.
    """
    n, width = neighbour_rows.shape
    keep = (neighbour_rows >= 0) & labelled[np.maximum(neighbour_rows, 0)] if width else np.zeros((n, 0), bool)
    keep &= np.cumsum(keep, axis=1) <= k
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept neighbours first, in rank order
    kept = np.take_along_axis(keep, order, axis=1)
    rows = np.full((n, k), -1, dtype=np.int64)
    out_sims = np.full((n, k), -np.inf, dtype=np.float32)
    rows[:, : order.shape[1]] = np.where(kept, np.take_along_axis(neighbour_rows, order, axis=1), -1)
    out_sims[:, : order.shape[1]] = np.where(kept, np.take_along_axis(sims, order, axis=1), -np.inf)
    return rows, out_sims


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
