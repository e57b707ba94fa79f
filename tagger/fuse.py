"""Fusion of the score sources (kNN vote, head, lexical) into one calibrated score per tag.

Weights are chosen on validation over a simplex grid that includes every single source. A grid point is
judged on two measures, weighted F1 (the frequent tags) and macro F1 (the long tail), each of the tag
predictions evaluation scores (the top tag; for multi-valued families every tag at 0.5, which temperature
scaling does not move). Preferred are the points at least as good as the best single source on *both*;
among them the best sum of the two. When no point is, the one closest to it (the largest worst shortfall).
Ties go to the lower log loss. The fused scores are then temperature-scaled on validation so that a score
of 0.8 means right about 80% of the time.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit
from sklearn.metrics import f1_score

EPS = 1e-6


def fuse_scores(sources: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Σ weight · scores over the sources that have a weight."""
    total = None
    for name, weight in weights.items():
        if weight:
            part = weight * sources[name]
            total = part if total is None else total + part
    if total is None:
        raise ValueError("all fusion weights are zero")
    return total.astype(np.float32)


def simplex_grid(n: int, step: float = 0.1) -> list[tuple[float, ...]]:
    """All weight vectors of `n` non-negative multiples of `step` summing to 1 (vertices included)."""
    units = round(1 / step)
    return [
        tuple(c / units for c in combo)
        for combo in itertools.product(range(units + 1), repeat=n)
        if sum(combo) == units
    ]


def selection_scores(scores: np.ndarray, y: np.ndarray, multilabel: bool) -> tuple[float, float]:
    """(weighted F1, macro F1) over the classes present in `y`: of the top tag (single-valued), or of every
    tag scoring at least 0.5 (multi-valued)."""
    if multilabel:
        truth = np.asarray(y).astype(bool)
        pred = scores >= 0.5
        tp = (truth & pred).sum(0)
        support = truth.sum(0)
        f1 = 2 * tp / np.maximum(support + pred.sum(0), 1)
        present = support > 0
        if not present.any():
            return 0.0, 0.0
        return float(np.average(f1[present], weights=support[present])), float(f1[present].mean())
    present = np.unique(y)
    pred = scores.argmax(1)
    return (
        float(f1_score(y, pred, labels=present, average="weighted", zero_division=0)),
        float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
    )


def log_loss(scores: np.ndarray, y: np.ndarray, multilabel: bool) -> float:
    p = np.clip(scores, EPS, 1 - EPS)
    if multilabel:
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    p = p / p.sum(1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def choose_weights(
    sources: Mapping[str, np.ndarray], y: np.ndarray, multilabel: bool, step: float = 0.1
) -> dict[str, float]:
    """The grid point at least as good as the best single source on weighted and on macro F1 with the best
    sum of the two; failing that, the one with the smallest shortfall (module doc). Ties: lower log loss."""
    names = sorted(sources)
    grid = [dict(zip(names, combo)) for combo in simplex_grid(len(names), step)]
    scored = []
    for weights in grid:
        fused = fuse_scores(sources, weights)
        scored.append((weights, *selection_scores(fused, y, multilabel), log_loss(fused, y, multilabel)))
    singles = [s for s in scored if max(s[0].values()) == 1.0]
    best_weighted, best_macro = max(s[1] for s in singles), max(s[2] for s in singles)

    def key(item: tuple) -> tuple:
        _, weighted, macro, loss = item
        shortfall = round(min(weighted - best_weighted, macro - best_macro), 6)
        return (shortfall >= 0, round(weighted + macro, 6) if shortfall >= 0 else shortfall, -loss)

    return max(scored, key=key)[0]


def to_logits(scores: np.ndarray, multilabel: bool) -> np.ndarray:
    p = np.clip(scores, EPS, 1 - EPS)
    return np.log(p / (1 - p)) if multilabel else np.log(p)


def apply_temperature(scores: np.ndarray, temperature: float, multilabel: bool) -> np.ndarray:
    """Calibrated scores: softmax (single) or sigmoid (multi) of the scores' logits divided by `temperature`."""
    logits = to_logits(scores, multilabel) / temperature
    if multilabel:
        return expit(logits).astype(np.float32)  # no overflow warning at large negative logits
    logits -= logits.max(1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(1, keepdims=True)).astype(np.float32)


def fit_temperature(scores: np.ndarray, y: np.ndarray, multilabel: bool, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature scaling (Guo et al. 2017): the T minimising validation log loss of the calibrated scores,
    by a bounded scalar search over log T. One parameter, so the top tag never changes."""
    result = minimize_scalar(
        lambda log_t: log_loss(apply_temperature(scores, float(np.exp(log_t)), multilabel), y, multilabel),
        bounds=(np.log(bounds[0]), np.log(bounds[1])),
        method="bounded",
    )
    return float(np.exp(result.x))
