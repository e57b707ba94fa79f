"""Query understanding: the tagger run on the shopper's query, as on a product with only a title, and the tag
values the query names.

The tags it is confident about (calibrated score at or above the tag's threshold, the same rule that accepts a
product's tag) and the values the query names outright ("耐克 双肩包" names brand 耐克 and product type 双肩包;
`tagger.names`) become boosts of the ranking (default: a text match carrying the tag scores higher) or
suggested filters the storefront can offer ("category: Jeans?") without changing the ranking. As boosts, the
named ones also get a kNN list of their own among the products carrying them, fused with the text matches
and the plain kNN list: a shopper who names a product type wants neighbours of that type first, while
products not tagged yet must still come, and a tag the tagger only infers (a gender for "wallets") only
boosts. Every tag comes back with its score, its threshold and each source's
score, so a response can say why.
"""

from __future__ import annotations

from dataclasses import dataclass

from dataclasses import replace

import numpy as np

from shoptag.indexer.documents import SearchQuery
from shoptag.tagger.model import TaggerModel, decide, score_sources
from shoptag.tagger.names import named_values
from shoptag.tagger.product_vector import fuse

MODES = ("boost", "suggest", "off")


@dataclass(frozen=True)
class QueryTag:
    family: str
    value: str
    score: float
    threshold: float | None  # None: the tag is never accepted by its score alone
    used_as: str  # "boost" | "suggestion"
    sources: dict[str, float]  # each tagger source's score for this tag
    named: bool = False  # the query names the value (its tagger score may be below the threshold)


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
    """The tags of the query `text` (with its text-encoder vector), used as `mode` says: those the tagger
    accepts, and those the text names, in family order."""
    if mode == "off":
        return []
    scores = score_sources(model, query_vector(model, text_vector), [text], [None])
    used_as = "boost" if mode == "boost" else "suggestion"
    accepted = {(d.family, d.value) for d in decide(model, scores, ["text"])[0] if d.status == "accepted"}
    out = []
    for family, fm in model.families.items():
        named = set(named_values(text, model.name_patterns[family]))
        chosen = named | {fm.vocab.index(value) for f, value in accepted if f == family}
        fused, sources = scores[family].fused[0], scores[family].sources
        for c in sorted(chosen):
            threshold = fm.thresholds[c]
            out.append(QueryTag(
                family, fm.vocab.values[c], round(float(fused[c]), 4),
                round(float(threshold), 4) if np.isfinite(threshold) else None, used_as,
                {name: round(float(s[0, c]), 4) for name, s in sources.items()}, c in named))
    return out


def applied(query: SearchQuery, tags: list[QueryTag], mode: str) -> SearchQuery:
    """`query` with its query tags at work: in boost mode every one boosts text matches and the named ones get
    a kNN list among their products; otherwise (suggestions, off) the ranking is left alone."""
    if mode != "boost":
        return query
    return replace(query, boosts=as_filters(tags), vector_filters=as_filters([t for t in tags if t.named]))


def as_filters(tags: list[QueryTag]) -> dict[str, list[str]]:
    """Family -> values of `tags`, the shape boosts and filters take."""
    out: dict[str, list[str]] = {}
    for tag in tags:
        out.setdefault(tag.family, []).append(tag.value)
    return out
