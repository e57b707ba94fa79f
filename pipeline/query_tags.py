"""Query understanding: the tagger run on the shopper's query, as on a product with only a title.

The tags it is confident about (calibrated score at or above the tag's threshold, the same rule that accepts a
product's tag) become boosts of the ranking (default: a text match carrying the tag scores higher) or
suggested filters the storefront can offer ("category: Jeans?") without changing the ranking. Every tag it
used comes back with its score, its threshold and each source's score, so a response can say why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shoptag.tagger.model import TaggerModel, decide, score_sources
from shoptag.tagger.product_vector import fuse

MODES = ("boost", "suggest", "off")


@dataclass(frozen=True)
class QueryTag:
    family: str
    value: str
    score: float
    threshold: float
    used_as: str  # "boost" | "suggestion"
    sources: dict[str, float]  # each tagger source's score for this tag


def query_vector(model: TaggerModel, text_vector: np.ndarray) -> np.ndarray:
    """The query as the tagger's index sees products: its text vector, with an empty image half when the model
    was trained on text + image vectors (a query has no photo)."""
    text = np.asarray(text_vector, dtype=np.float32)[None, :]
    image_dim = model.index.dim - text.shape[1]
    if image_dim <= 0:
        return text
    weight = float(model.encoders.get("image_weight") or 0.0)
    return fuse(text, np.zeros((1, image_dim), dtype=np.float32), np.array([False]), weight)


def understand(model: TaggerModel, text: str, text_vector: np.ndarray, mode: str = "boost") -> list[QueryTag]:
    """The confident tags of the query `text` (with its text-encoder vector), used as `mode` says."""
    if mode == "off":
        return []
    scores = score_sources(model, query_vector(model, text_vector), [text], [None])
    used_as = "boost" if mode == "boost" else "suggestion"
    return [
        QueryTag(d.family, d.value, round(d.score, 4), round(float(d.evidence["threshold"]), 4), used_as,
                 d.evidence["sources"])
        for d in decide(model, scores, ["text"])[0]
        if d.status == "accepted"
    ]


def as_filters(tags: list[QueryTag]) -> dict[str, list[str]]:
    """Family -> values of `tags`, the shape boosts and filters take."""
    out: dict[str, list[str]] = {}
    for tag in tags:
        out.setdefault(tag.family, []).append(tag.value)
    return out
