"""Tags that follow demand: sales per tag over time windows, seasonal items, and co-purchase evidence for tags a
product narrowly missed. Plain functions over arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

DAY = 86400


@dataclass(frozen=True)
class Trend:
    recent: float  # units in the last `window` days
    previous: float  # units in the window before
    ratio: float  # (recent + 1) / (previous + 1): > 1 trending up


def windowed_sales(items: np.ndarray, times: np.ndarray, quantity: np.ndarray, now: int, window_days: int,
                   n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Units per item in (now - w, now] and in the window before it."""
    age = now - times
    recent = (age >= 0) & (age < window_days * DAY)
    previous = (age >= window_days * DAY) & (age < 2 * window_days * DAY)
    qty = np.clip(quantity, 0, None)
    return (np.bincount(items[recent], weights=qty[recent], minlength=n_items),
            np.bincount(items[previous], weights=qty[previous], minlength=n_items))


def tag_trends(tag_matrix: sp.csr_matrix, recent: np.ndarray, previous: np.ndarray) -> list[Trend]:
    """Per tag value (columns of the items × tags 0/1 matrix): units in both windows and their ratio."""
    r = np.asarray(tag_matrix.T @ recent).ravel()
    p = np.asarray(tag_matrix.T @ previous).ravel()
    return [Trend(float(a), float(b), float((a + 1.0) / (b + 1.0))) for a, b in zip(r, p, strict=True)]


def monthly_units(items: np.ndarray, times: np.ndarray, quantity: np.ndarray, n_items: int) -> np.ndarray:
    """items × 12: units sold per calendar month (January first), whatever the year."""
    month = times.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64) % 12
    qty = np.clip(quantity, 0, None)
    return np.bincount(items * 12 + month, weights=qty, minlength=n_items * 12).reshape(n_items, 12)


def seasonal_lift(items: np.ndarray, times: np.ndarray, quantity: np.ndarray, months: tuple[int, ...],
                  n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Per item: units sold, and the lift of its share of units sold in `months` over the whole shop's share
    (lift 3: the item sells three times as much of its volume in those months as the shop does)."""
    total, lift, _, _ = season_shares(monthly_units(items, times, quantity, n_items), months)
    return total, lift


def season_shares(monthly: np.ndarray, months: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """From `monthly_units`: per item its units, its lift, its share of units in `months`; and the shop's share."""
    total = monthly.sum(axis=1)
    seasonal = monthly[:, [m - 1 for m in months]].sum(axis=1)
    shop_share = float(seasonal.sum() / total.sum()) if total.sum() > 0 else 0.0
    share = seasonal / np.maximum(total, 1e-12)
    lift = share / shop_share if shop_share > 0 else np.zeros_like(share)
    lift = np.where(total > 0, lift, 0.0)
    return total, lift, share, shop_share


def copurchase_share(similarity: sp.csr_matrix, has_tag: np.ndarray) -> np.ndarray:
    """Per item: the share of its co-engagement weight that goes to items carrying the tag (0..1)."""
    weight = np.asarray(similarity.sum(axis=1)).ravel()
    tagged = np.asarray(similarity @ has_tag.astype(np.float64)).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(weight > 0, tagged / weight, 0.0)


def near_miss(scores: np.ndarray, threshold: float, share: np.ndarray, margin: float, min_share: float) -> np.ndarray:
    """Items whose tagger score for a tag is just under its threshold and that are mostly bought with items
    carrying the tag: candidates for a person to review, with the share as evidence."""
    return np.flatnonzero((scores < threshold) & (scores >= threshold - margin) & (share >= min_share))
