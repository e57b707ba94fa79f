"""Path-consistent decisions over the levels of a hierarchy (pure functions over arrays).

Each level (e.g. masterCategory, subCategory, articleType) is a family with its own calibrated scores. Deciding
each level alone can give "Footwear > Bottomwear > Jeans"; here the levels are decided together: every allowed
path (a row of `columns`, one column index per level) gets the joint score Σ log p_level(value), the best path
wins, and each level takes that path's value. A level is accepted when it reaches its own threshold, or when a
deeper level of the same path is accepted (a child implies its ancestors: such a level is "derived").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FLOOR = 1e-6  # a probability of 0 must not make a path impossible for ever: log(FLOOR) is a heavy penalty


def path_columns(paths: Sequence[Sequence[str]], level_values: Sequence[Sequence[str]]) -> np.ndarray:
    """(P, L) column of each path's value in each level's vocabulary; -1 where the value is not in it (a tag
    the model does not emit) or the path is shorter. Paths with no known value at all are dropped."""
    index = [{v: c for c, v in enumerate(values)} for values in level_values]
    rows = []
    for path in paths:
        row = [index[lvl].get(path[lvl], -1) if lvl < len(path) else -1 for lvl in range(len(level_values))]
        if any(c >= 0 for c in row):
            rows.append(row)
    return np.unique(np.array(rows, dtype=np.int64).reshape(-1, len(level_values)), axis=0)


def joint_scores(level_scores: Sequence[np.ndarray], columns: np.ndarray) -> np.ndarray:
    """(n, P) log joint score of every path: Σ over levels of log p(value); a level whose value the model does
    not know contributes the score mass left over by the values it does know."""
    n = level_scores[0].shape[0]
    out = np.zeros((n, len(columns)))
    for lvl, scores in enumerate(level_scores):
        cols = columns[:, lvl]
        known = cols >= 0
        logp = np.log(np.clip(scores, FLOOR, 1.0))
        out[:, known] += logp[:, cols[known]]
        if (~known).any():
            rest = np.clip(1.0 - scores.sum(1), FLOOR, 1.0) if scores.shape[1] else np.ones(n)
            out[:, ~known] += np.log(rest)[:, None]
    return out


@dataclass
class PathDecision:
    columns: np.ndarray  # (n, L) the chosen path's column per level, -1: the path has no value there
    accepted: np.ndarray  # (n, L) bool: emitted (own threshold reached, or derived from a deeper level)
    derived: np.ndarray  # (n, L) bool: accepted only because a deeper level of the path was
    joint: np.ndarray  # (n,) the chosen path's joint score, geometric mean over its levels (0..1)


def decide_paths(
    level_scores: Sequence[np.ndarray], level_thresholds: Sequence[np.ndarray], columns: np.ndarray
) -> PathDecision:
    """The best path of every product and which of its levels are emitted."""
    joint = joint_scores(level_scores, columns)
    best = joint.argmax(1)
    chosen = columns[best]
    n, levels = chosen.shape
    own = np.zeros((n, levels), dtype=bool)
    for lvl, (scores, thresholds) in enumerate(zip(level_scores, level_thresholds)):
        c = chosen[:, lvl]
        ok = c >= 0
        own[ok, lvl] = scores[np.flatnonzero(ok), c[ok]] >= thresholds[c[ok]]
    # a level is implied when any deeper level of the chosen path is accepted on its own
    deeper = np.logical_or.accumulate(own[:, ::-1], axis=1)[:, ::-1]
    accepted = deeper & (chosen >= 0)
    depth = np.maximum((chosen >= 0).sum(1), 1)
    return PathDecision(chosen, accepted, accepted & ~own, np.exp(joint[np.arange(n), best] / depth))


def inconsistent(predicted: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """(n,) bool: the emitted levels of a product (-1: not emitted) match no allowed path."""
    out = np.zeros(len(predicted), dtype=bool)
    for start in range(0, len(predicted), 4096):
        block = predicted[start : start + 4096]
        match = (block[:, None, :] == columns[None, :, :]) | (block[:, None, :] < 0)
        out[start : start + 4096] = ~match.all(2).any(1)
    return out


def independent_columns(level_scores: Sequence[np.ndarray], level_thresholds: Sequence[np.ndarray]) -> np.ndarray:
    """(n, L) each level decided on its own (argmax if it reaches its threshold, else -1): the baseline."""
    out = []
    for scores, thresholds in zip(level_scores, level_thresholds):
        best = scores.argmax(1)
        out.append(np.where(scores[np.arange(len(best)), best] >= thresholds[best], best, -1))
    return np.stack(out, 1)
