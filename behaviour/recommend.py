"""Scoring recommendations: plain functions over arrays.

Every score source is scaled to [0, 1] by its maximum before weighting, so weights mean shares:
- `repeat`: the user's own decayed engagement with an item (people re-buy; the strongest simple baseline);
- `cobought`: the user's history pushed through the item-item co-engagement matrix;
- `content`: similarity of an item's vector to the user's profile vector (reaches items nobody has bought yet);
- `popular`: recent decayed popularity (what a new user gets);
- `neighbours`: what the users who buy most like this user buy (user-based nearest neighbours, as in
  TIFU-KNN for next-basket recommendation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class Weights:
    repeat: float = 0.0
    cobought: float = 0.0
    content: float = 0.0
    popular: float = 0.0
    neighbours: float = 0.0


def scaled(values: np.ndarray) -> np.ndarray:
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, None)
    peak = values.max() if values.size else 0.0
    return values / peak if peak > 0 else values


def history_vector(items: np.ndarray, weights: np.ndarray, n_items: int) -> np.ndarray:
    """Dense per-item sum of a user's decayed event weights."""
    return np.bincount(items, weights=weights, minlength=n_items).astype(np.float64)


def profile_vector(history: np.ndarray, vectors: np.ndarray) -> np.ndarray | None:
    """The user's preference vector: history-weighted mean of item vectors, unit length (None: no history)."""
    nz = np.flatnonzero(history)
    if not len(nz):
        return None
    profile = history[nz] @ vectors[nz]
    norm = np.linalg.norm(profile)
    return profile / norm if norm > 0 else None


def cobought_scores(history: np.ndarray, similarity: sp.csr_matrix) -> np.ndarray:
    """The user's history pushed through the item-item matrix: Σᵢ history[i] · similarity[i, j] for every j. Only
    the rows of the user's own items are read (tens, not the catalog)."""
    nz = np.flatnonzero(history)
    return np.asarray(similarity[nz].T @ history[nz]).ravel()


def neighbour_scores(history: np.ndarray, users: sp.csr_matrix, users_by_item: sp.csr_matrix, k: int,
                     exclude: int | None = None) -> np.ndarray:
    """Similarity-weighted mean of the k users most like this one (rows of `users` are unit length;
    `users_by_item` is its transpose as rows, so only the columns of the user's own items are read); `exclude`:
    the user's own row, when they are in the matrix."""
    nz = np.flatnonzero(history)
    if not len(nz) or users.shape[0] == 0:
        return np.zeros(users.shape[1])
    weights = np.log1p(history[nz])
    sims = np.asarray(users_by_item[nz].T @ (weights / np.linalg.norm(weights))).ravel()
    if exclude is not None:
        sims[exclude] = -1.0
    top = np.argpartition(-sims, k - 1)[:k] if len(sims) > k else np.arange(len(sims))
    top = top[sims[top] > 0]
    if not len(top):
        return np.zeros(users.shape[1])
    return np.asarray(users[top].T @ sims[top]).ravel() / sims[top].sum()


def score_parts(history: np.ndarray, cobought: np.ndarray, popularity: np.ndarray, content: np.ndarray,
                neighbours: np.ndarray, weights: Weights) -> dict[str, np.ndarray]:
    """Each source's weighted, scaled scores for one user (`content`: cosine of each item to the user's profile,
    0 if unknown; `neighbours`: `neighbour_scores`); their sum ranks, their largest names the reason."""
    return {"repeat": weights.repeat * scaled(history), "cobought": weights.cobought * scaled(cobought),
            "content": weights.content * scaled(content), "popular": weights.popular * scaled(popularity),
            "neighbours": weights.neighbours * scaled(neighbours)}


def item_scores(row: np.ndarray, content: np.ndarray, behaviour_weight: float) -> np.ndarray:
    """"Similar" for one item: its co-engagement row blended with content similarity. An item with no history
    has an empty row and gets pure content neighbours."""
    if not np.any(row > 0):
        return scaled(content)
    return behaviour_weight * scaled(row) + (1.0 - behaviour_weight) * scaled(content)


def top_k(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of the k best scores (> 0), best first; ties broken by index so results are deterministic."""
    scores = np.asarray(scores, dtype=np.float64).copy()
    if exclude is not None and len(exclude):
        scores[exclude] = -np.inf
    candidates = np.flatnonzero(scores > 0)
    if len(candidates) > k:
        part = np.argpartition(-scores[candidates], k - 1)[:k]
        candidates = candidates[part]
    order = np.lexsort((candidates, -scores[candidates]))
    return candidates[order]


def top_k_filled(scores: np.ndarray, k: int, fill: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """`top_k` of `scores`, then, while fewer than k, the best of `fill` (> 0), then catalog order: k items
    whenever the catalog (less `exclude`) has k, however sparse the scores are."""
    idx = top_k(scores, k, exclude)
    if len(idx) >= k:
        return idx
    taken = np.concatenate([idx, exclude]) if exclude is not None and len(exclude) else idx
    more = top_k(fill, k - len(idx), taken)
    idx = np.concatenate([idx, more])
    if len(idx) < k:
        free = np.ones(len(scores), dtype=bool)
        free[np.concatenate([idx, taken]).astype(np.int64)] = False
        idx = np.concatenate([idx, np.flatnonzero(free)[: k - len(idx)]])
    return idx.astype(np.int64)


def rerank(scores: np.ndarray, affinity: np.ndarray, strength: float) -> np.ndarray:
    """Order of results after adding `strength` × the user's affinity (each in [0, 1]) to their scaled scores."""
    combined = scaled(scores) + strength * scaled(affinity)
    return np.lexsort((np.arange(len(combined)), -combined))
