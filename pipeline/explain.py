"""Why a product has its tags: each tag's score, sources, fusion weights and the neighbours that voted; for tags
derived from behaviour, the sales or co-purchase evidence."""

from __future__ import annotations

from shoptag.core.errors import NotFound

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
from shoptag.store.records import Store


def explain(store: Store, product_id: str) -> dict:
    """A JSON-ready account of one product's tags (status accepted, review, or replaced: a catalog tag a
    correction overrode); `NotFound` for an unknown product."""
    found = store.products([product_id])
    if not found:
        raise NotFound(f"unknown product id {product_id!r}")
    product = found[0]
    tags = store.tags_of(product_id)
    neighbour_ids = sorted(
        {n["id"] for t in tags if t.evidence for n in t.evidence.get("neighbours", [])}
    )
    titles = {p.id: p.title for p in store.products(neighbour_ids)} if neighbour_ids else {}
    corrected = store.corrected_families(product_id)
    families: dict[str, list[dict]] = {}
    for t in tags:
        # a correction wins: the catalog's value it overrode is shown as replaced, never as accepted beside it
        status = "replaced" if t.source == "catalog" and t.family in corrected else t.status
        entry = {"value": t.value, "source": t.source, "status": status, "score": t.score}
        if t.evidence:
            entry["evidence"] = dict(t.evidence)
            if "neighbours" in t.evidence:
                entry["evidence"]["neighbours"] = [{**n, "title": titles.get(n["id"], "")}
                                                   for n in t.evidence["neighbours"]]
        if t.evidence and (why := _why(t.evidence, t.status, t.score)):
            entry["why"] = why
        families.setdefault(t.family, []).append(entry)
    return {
        "id": product.id,
        "title": product.title,
        "image": product.image,
        "tags": families,
    }


def _why(evidence: dict, status: str, score: float | None) -> str | None:
    """One line for tags the tag system made or changed, and for a model's tag left to review: below its
    threshold, or no threshold at all (the details stay in the evidence)."""
    if "rule" in evidence:
        return f"rule on line {evidence['rule']['line']}: {evidence['rule']['rule']}"
    if "blocked_by_rule" in evidence:
        return f"needs review: blocked by the rule on line {evidence['blocked_by_rule']['line']}"
    if "derived_from" in evidence:
        return f"derived: {evidence['derived_from']} implies it (path {evidence['path']})"
    if evidence.get("derived") == "seasonal":
        months = "–".join(MONTHS[m - 1] for m in (evidence["months"][0], evidence["months"][-1]))
        return (f"derived from sales dates: {evidence['season_share']:.0%} of its {evidence['units']:g} units sold "
                f"in {months}, against {evidence['shop_season_share']:.0%} for the shop (lift "
                f"{evidence['lift']:.1f}); needs a person's review")
    if evidence.get("derived") == "copurchase":
        return (f"bought with products carrying it ({evidence['share']:.0%} of its co-purchase weight) and scored "
                f"{evidence['tagger_score']:.2f}, just under its threshold {evidence['threshold']:.2f}; needs a "
                "person's review")
    if "zero_shot" in evidence:
        return "zero-shot from the tag's name: needs a person's review"
    if status == "review" and "threshold" in evidence:
        if evidence["threshold"] is None:
            return ("needs review: no threshold is certified for this tag yet: its validation labels were too few "
                    "(or too often wrong) to show the precision target at the confidence bound; label more products")
        if score is not None:
            return f"needs review: score {score:.2f} is below this tag's threshold {evidence['threshold']:.2f}"
    return None
