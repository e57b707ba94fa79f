"""Item-to-item co-engagement from baskets and user histories: plain functions over scipy sparse matrices.

"Bought together" is co-occurrence in one basket (session); "also bought" is co-occurrence in one user's history.
Both are decayed by age (a half-life), normalised like a cosine with shrinkage (so two items seen together once
are not as similar as two items always seen together a hundred times), blended, and cut to the top-k neighbours
per item so the matrix stays O(items × k) at any catalog size.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

DAY = 86400.0


def decay(times: np.ndarray, now: int, half_life_days: float) -> np.ndarray:
    """0.5 ** (age / half-life): 1 for an event at `now`, 0.5 one half-life earlier."""
    return np.exp2(-(now - times).astype(np.float64) / (half_life_days * DAY))


def incidence(groups: np.ndarray, items: np.ndarray, weights: np.ndarray, n_items: int, binary: bool) -> sp.csr_matrix:
    """groups × items matrix of summed weights; `binary` keeps one entry per (group, item) at the group's largest
    weight (an item bought in three lines of one basket counts once)."""
    _, group_index = np.unique(groups, return_inverse=True)
    n_groups = int(group_index.max()) + 1 if len(group_index) else 0
    matrix = sp.coo_matrix((weights, (group_index, items)), shape=(n_groups, n_items)).tocsr()
    if binary:
        matrix.sum_duplicates()
        counts = sp.coo_matrix((np.ones_like(weights), (group_index, items)), shape=(n_groups, n_items)).tocsr()
        counts.sum_duplicates()
        matrix.data = matrix.data / counts.data  # mean weight of the group's lines for that item
    else:
        matrix.data = np.log1p(matrix.data)  # a wholesaler's 48 lines of one item should not swamp everything
    return matrix


def cosine_similarity(matrix: sp.csr_matrix, shrink: float) -> sp.csr_matrix:
    """item × item: Xᵀ X / (‖i‖‖j‖ + shrink), diagonal removed."""
    gram = (matrix.T @ matrix).tocsr()
    norms = np.sqrt(gram.diagonal())
    gram.setdiag(0.0)
    gram.eliminate_zeros()
    coo = gram.tocoo()
    coo.data = coo.data / (norms[coo.row] * norms[coo.col] + shrink)
    return coo.tocsr()


def top_k_rows(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep each row's k largest entries."""
    matrix = matrix.tocsr()
    rows, cols, vals = [], [], []
    for r in range(matrix.shape[0]):
        start, end = matrix.indptr[r], matrix.indptr[r + 1]
        if start == end:
            continue
        data = matrix.data[start:end]
        keep = np.argpartition(-data, k - 1)[:k] if end - start > k else np.arange(end - start)
        rows.append(np.full(len(keep), r))
        cols.append(matrix.indices[start:end][keep])
        vals.append(data[keep])
    if not rows:
        return sp.csr_matrix(matrix.shape)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=matrix.shape)


def item_similarity(basket: np.ndarray, user: np.ndarray, items: np.ndarray, weights: np.ndarray, n_items: int, *,
                    user_share: float, shrink: float, k: int) -> sp.csr_matrix:
    """Blend of basket co-occurrence and user-history co-occurrence (share `user_share`), top-k per item.
    `basket`/`user` are group ids per event (-1: none); `weights` the decayed event weights."""
    parts = []
    in_basket = basket >= 0
    if in_basket.any():
        parts.append((1.0 - user_share, cosine_similarity(
            incidence(basket[in_basket], items[in_basket], weights[in_basket], n_items, binary=True), shrink)))
    has_user = user >= 0
    if user_share > 0 and has_user.any():
        parts.append((user_share, cosine_similarity(
            incidence(user[has_user], items[has_user], weights[has_user], n_items, binary=False), shrink)))
    if not parts:
        return sp.csr_matrix((n_items, n_items))
    total = sum(share for share, _ in parts)
    blended = sum((share / total) * m for share, m in parts)
    return top_k_rows(blended.tocsr(), k)


def user_profiles(users: np.ndarray, items: np.ndarray, weights: np.ndarray, n_items: int
                  ) -> tuple[np.ndarray, sp.csr_matrix]:
    """(user ids, users × items matrix): each known user's log-summed decayed engagement, rows of unit length,
    for finding users who buy alike."""
    known = users >= 0
    ids = np.unique(users[known])
    matrix = incidence(users[known], items[known], weights[known], n_items, binary=False)
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    return ids, sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ matrix


def popularity(items: np.ndarray, weights: np.ndarray, n_items: int) -> np.ndarray:
    """Decayed engagement per item, scaled to max 1."""
    counts = np.bincount(items, weights=weights, minlength=n_items)
    peak = counts.max() if len(counts) else 0.0
    return counts / peak if peak > 0 else counts
