"""Ranking and merging mined phrases into suggested tags (pure functions over vectors).

A phrase is a good tag when the products containing it are alike (coherence: the mean cosine of their vectors to
the phrase's) and when it covers a useful share of the catalog (coverage). Phrases whose vectors are close, or
that are the same word but for a plural ("jean", "jeans"), merge into one suggestion with the others as synonyms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

MAX_DISTANCE = 0.2  # cosine distance: all-MiniLM puts "jeans" and "denim pants" at 0.1, "jeans" and "trousers" at 0.24


@dataclass
class Suggestion:
    value: str
    synonyms: list[str]
    rows: list[int]  # products covered by any of its phrases
    coherence: float
    score: float


def coherence(phrase_vectors: np.ndarray, product_vectors: np.ndarray, rows: Sequence[Sequence[int]]) -> np.ndarray:
    """(P,) mean cosine of each phrase's vector to the vectors of the products that contain it."""
    return np.array([float((product_vectors[r] @ v).mean()) for v, r in zip(phrase_vectors, rows)])


def _stem(phrase: str) -> str:
    """Crude plural folding, enough to merge "jean"/"jeans" and "dress"/"dresses"."""
    words = phrase.split()
    last = words[-1]
    for suffix in ("es", "s"):
        if last.endswith(suffix) and len(last) > len(suffix) + 2 and not last.endswith("ss"):
            last = last[: -len(suffix)]
            break
    return " ".join([*words[:-1], last])


def same_name(phrase: str) -> str:
    """What makes a phrase the same as a tag value: case, hyphens and a plural ending ignored ("T-Shirts",
    "t shirt")."""
    return _stem(" ".join(phrase.casefold().replace("-", " ").split()))


def cluster_phrases(phrases: Sequence[str], vectors: np.ndarray, weights: Sequence[int], max_distance: float) -> np.ndarray:
    """Cluster id per phrase. Phrases with the same stem are one group first, seen through the vector of its
    most frequent member (`weights`: products per phrase); groups then merge by average-link clustering of
    cosine distance up to `max_distance`."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(phrases):
        groups.setdefault(_stem(p), []).append(i)
    members = list(groups.values())
    heads = np.array([max(m, key=lambda i: weights[i]) for m in members])
    labels = np.zeros(len(phrases), dtype=np.int64)
    if len(members) > 1:
        rep = vectors[heads]
        distance = np.clip(1.0 - rep @ rep.T, 0.0, 2.0)
        np.fill_diagonal(distance, 0.0)
        group_labels = fcluster(linkage(squareform((distance + distance.T) / 2, checks=False), "average"),
                                max_distance, "distance")
    else:
        group_labels = np.ones(1, dtype=np.int64)
    for g, m in enumerate(members):
        labels[m] = group_labels[g]
    return labels


def suggest(
    phrase_rows: Mapping[str, Sequence[int]], phrase_vectors: np.ndarray, product_vectors: np.ndarray, *,
    max_distance: float = MAX_DISTANCE, known: set[str] = frozenset(), limit: int = 50,
) -> list[Suggestion]:
    """Suggested tags, best first: phrases ranked by coherence × log coverage, merged into clusters; a cluster
    with a member that is already a tag value (`known`, compared by `same_name`) is left out."""
    known = {same_name(k) for k in known}
    phrases = list(phrase_rows)
    rows = [list(phrase_rows[p]) for p in phrases]
    coh = coherence(phrase_vectors, product_vectors, rows)
    n_products = len(product_vectors)
    score = coh * np.log1p([len(r) for r in rows]) / np.log1p(n_products)
    labels = cluster_phrases(phrases, phrase_vectors, [len(r) for r in rows], max_distance)
    out = []
    for label in np.unique(labels):
        members = sorted(np.flatnonzero(labels == label), key=lambda i: (-len(rows[i]), phrases[i]))
        names = [phrases[i] for i in members]
        if any(same_name(name) in known for name in names):
            continue
        covered = sorted(set().union(*(rows[i] for i in members)))
        if len(covered) > 0.5 * n_products:  # on most products it says nothing
            continue
        out.append(Suggestion(names[0], names[1:], covered, float(coh[members].max()), float(score[members].max())))
    out.sort(key=lambda s: -s.score)
    return out[:limit]
