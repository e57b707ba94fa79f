"""Fusion of the score sources (kNN vote, head, lexical) into one calibrated score per tag.

Weights are chosen on validation over a simplex grid that includes every single source, so on validation
the fused tagger is never worse than its best source; ties go to the lower log loss. The fused scores are
then temperature-scaled on validation so that a score of 0.8 means right about 80% of the time.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit
from sklearn.metrics import f1_score, precision_recall_curve

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


def selection_score(scores: np.ndarray, y: np.ndarray, multilabel: bool) -> float:
    """What weights are chosen by: weighted F1 of the top tag (single-valued), or the best micro F1 over
    global thresholds (multi-valued)."""
    if multilabel:
        precision, recall, _ = precision_recall_curve(np.asarray(y).ravel(), scores.ravel())
        f1 = 2 * precision * recall / np.maximum(precision + recall, EPS)
        return float(f1.max())
    return float(f1_score(y, scores.argmax(1), average="weighted", zero_division=0))


def log_loss(scores: np.ndarray, y: np.ndarray, multilabel: bool) -> float:
    p = np.clip(scores, EPS, 1 - EPS)
    if multilabel:
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    p = p / p.sum(1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def choose_weights(
    sources: Mapping[str, np.ndarray], y: np.ndarray, multilabel: bool, step: float = 0.1
) -> dict[str, float]:
    """The grid point with the best selection score on validation (ties: lower log loss)."""
    names = sorted(sources)
    best_key, best = None, None
    for combo in simplex_grid(len(names), step):
        weights = dict(zip(names, combo))
        fused = fuse_scores(sources, weights)
        key = (round(selection_score(fused, y, multilabel), 6), -log_loss(fused, y, multilabel))
        if best_key is None or key > best_key:
            best_key, best = key, weights
    assert best is not None
    return best


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
