"""The service's three writes: add (or replace) products and tag them, delete one, apply corrections.
Each runs inside `ServiceState.writing`, so the store and the search index change together."""

from __future__ import annotations

from shoptag.catalog.records import Product
from shoptag.core.errors import NotFound, UnknownFamily
from shoptag.pipeline.explain import explain
from shoptag.pipeline.ingest import stored
from shoptag.pipeline.search_sync import backend_key
from shoptag.pipeline.tag import tag_batch
from shoptag.pipeline.tag_system import known_families

from .state import ServiceState


def add_products(state: ServiceState, products: list[Product]) -> list[dict]:
    """Store the products (replacing any with the same id, catalog tags included), tag them now, index them.
    Tags people gave (catalog or feedback) are kept. Returns each product's tags with their evidence."""
    model, system = state.tagging()
    rows = [stored(p) for p in products]
    with state.writing([p.id for p in products]):
        with state.store.transaction() as db:
            state.store.upsert_products(db, rows)
            for p in products:
                state.store.set_catalog_tags(db, p.id, {family: list(values) for family, values in p.tags.items()})
        decisions = tag_batch(model, state.store, state.encoders, state.cache, rows, state.backend,
                              backend_key(state.settings, state.backend), system)
        explained = [explain(state.store, p.id) for p in products]
    state.metrics.tagged(decisions.values())
    state.metrics.products.labels("added").inc(len(products))
    return explained


def delete_product(state: ServiceState, product_id: str) -> bool:
    """Remove a product from the store and the index; False when there was none. Its feedback log stays."""
    with state.writing([product_id]):
        if not state.store.has_product(product_id):
            return False
        state.store.delete_products([product_id])
        state.backend.delete([product_id])
    state.metrics.products.labels("deleted").inc()
    return True


def apply_corrections(state: ServiceState, items: list[tuple[str, str, list[str]]]) -> list[str]:
    """Record corrections (appended to the feedback log, never lost) and re-index the products they touch.
    All or nothing: raises `UnknownProducts` (or `UnknownFamily`: a family the workspace does not know, most
    often a typo) and applies none when any product (family) is unknown."""
    ids = sorted({pid for pid, _, _ in items})
    families = known_families(state.settings, state.store.families())
    unknown = sorted({f for _, f, _ in items} - families) if families else []
    if unknown:  # the first, with the family closest to it: nothing is applied
        raise UnknownFamily(unknown[0], families)
    with state.writing(ids):
        unknown = [pid for pid in ids if not state.store.has_product(pid)]
        if unknown:
            raise UnknownProducts(unknown)
        state.store.add_feedback(items, origin="service")
        state.sync_search(ids)
        state.learn(ids)
    state.metrics.feedback.inc(len(items))
    return ids


class UnknownProducts(NotFound):
    """Corrections name products the store does not have; nothing was applied."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__(f"unknown product id(s): {', '.join(map(repr, ids[:20]))}; nothing applied")
        self.ids = ids
