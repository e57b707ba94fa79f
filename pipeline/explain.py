"""Why a product has its tags: each tag's score, sources, fusion weights and the neighbours that voted."""

from __future__ import annotations

from shoptag.core.errors import NotFound
from shoptag.store.records import Store


def explain(store: Store, product_id: str) -> dict:
    """A JSON-ready account of one product's tags; `NotFound` for an unknown product."""
    found = store.products([product_id])
    if not found:
        raise NotFound(f"unknown product id {product_id!r}")
    product = found[0]
    tags = store.tags_of(product_id)
    neighbour_ids = sorted(
        {n["id"] for t in tags if t.evidence for n in t.evidence.get("neighbours", [])}
    )
    titles = {p.id: p.title for p in store.products(neighbour_ids)} if neighbour_ids else {}
    families: dict[str, list[dict]] = {}
    for t in tags:
        entry = {"value": t.value, "source": t.source, "status": t.status, "score": t.score}
        if t.evidence:
            entry["evidence"] = {
                **t.evidence,
                "neighbours": [{**n, "title": titles.get(n["id"], "")} for n in t.evidence.get("neighbours", [])],
            }
        families.setdefault(t.family, []).append(entry)
    return {
        "id": product.id,
        "title": product.title,
        "image": product.image,
        "tags": families,
    }
