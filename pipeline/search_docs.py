"""Products + their winning tags + vectors → the documents both search backends index."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shoptag.indexer.documents import DocTag, SearchDoc
from shoptag.store.records import Store, StoredProduct
from shoptag.taxonomy.tree import LEVEL_SEPARATORS, level_values

from .encode import ProductVectors


def doc_tags(tags: Mapping[str, Sequence[tuple[str, str, float]]]) -> dict[str, list[DocTag]]:
    """A product's winning tags (from `Store.effective_tags`) as search sees them; empty families dropped.
    A path-valued tag (``Apparel > Topwear > Tshirts``) also gives one family per level (`level_values`:
    ``category@1 = Apparel``, ``category@2 = Apparel > Topwear``, …), so filters and facets work on any level
    with every backend."""
    out = {
        family: [DocTag(value, float(score), source) for value, source, score in values]
        for family, values in tags.items()
        if values
    }
    levels: dict[str, dict[str, DocTag]] = {}
    for family, values in tags.items():
        for value, source, score in values:
            if not any(separator in value for separator in LEVEL_SEPARATORS):
                continue  # a flat value (most are): no levels, and no call to find that out
            for level, prefix in level_values(family, value):
                kept = levels.setdefault(level, {}).get(prefix)
                if kept is None or score > kept.score:
                    levels[level][prefix] = DocTag(prefix, float(score), source)
    return out | {level: list(by_value.values()) for level, by_value in levels.items() if level not in out}


def search_docs(
    store: Store, products: Sequence[StoredProduct], vectors: ProductVectors, model_ids: dict,
    tags: Mapping[str, Mapping[str, Sequence[tuple[str, str, float]]]] | None = None,
    popularity: Mapping[str, float] | None = None,
) -> list[SearchDoc]:
    """One document per product: accepted tags only (a tag "needing review" is not searchable).

    `tags` (product -> family -> winning tags) and `popularity` save store queries when the caller has them."""
    if tags is None:
        tags = store.effective_tags([p.id for p in products])
    listed = store.listed_at([p.id for p in products])
    if popularity is None:
        popularity = store.popularity([p.id for p in products])
    docs = []
    for row, p in enumerate(products):
        families = doc_tags(tags.get(p.id, {}))
        docs.append(
            SearchDoc(
                id=p.id,
                title=p.title,
                description=p.description,
                tags=families,
                text_vector=vectors.text[row],
                image_vector=vectors.image[row] if vectors.image is not None and vectors.has_image[row] else None,
                fused_vector=vectors.fused[row],
                content_hash=p.content_hash,
                text_model=str(model_ids.get("text_model") or ""),
                image_model=str(model_ids.get("image_model") or ""),
                attributes=dict(p.attributes),
                listed_at=listed.get(p.id, 0.0),
                popularity=popularity.get(p.id),
            )
        )
    return docs
