"""The HTTP endpoints: thin wrappers turning requests into store, search and write calls and back."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import numpy as np

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response
from pydantic import Field, StringConstraints

from shoptag.catalog.feedback import MAX_NAME_CHARS, Correction
from shoptag.catalog.records import MAX_ID_CHARS
from shoptag.core.errors import BadInput, NotFound
from shoptag.indexer import storefront
from shoptag.indexer.documents import Hit
from shoptag.pipeline import recommend as recs
from shoptag.pipeline.explain import explain
from shoptag.pipeline.review import stats as review_stats
from shoptag.pipeline.search import SearchRequest, pairs, run_search
from shoptag.pipeline.search import diversity as parse_diversity

from .auth import require_api_key
from .schemas import (
    MAX_K, MAX_QUERY_CHARS, DeletedOut, ErrorOut, FeedbackOut, HealthOut,
    HitOut, ProductIn, ProductOut, ProductsOut, SearchOut, SimilarOut,
)
from .state import ServiceState
from .validate import checked_batch, validated_products
from .writes import add_products, apply_corrections, delete_product

ERRORS = {code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 422, 500, 503)}
router = APIRouter(responses=ERRORS)
writer = {"dependencies": [Depends(require_api_key)]}

# `:path` in the routes: an id may hold `/` (docs/SERVICE.md); the id rule itself is the catalog's
PathId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, description="Product id (may contain `/`).")]
# what `tag_filters` accepts, stated in the OpenAPI document too: a family and a value, each with a visible character
FilterItem = Annotated[str, StringConstraints(pattern=r"^[^=]*[^=\s][^=]*=.*\S.*$", max_length=2 * MAX_NAME_CHARS + 1)]
TagFilter = Annotated[list[FilterItem], Query(max_length=20, description="Tag filter `family=value` (repeatable; "
                                                                        "values of one family are OR-ed, families AND-ed).")]


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


State = Annotated[ServiceState, Depends(get_state)]


def tag_filters(items: list[str]) -> dict[str, list[str]]:
    """`family=value` strings → filters; `BadInput` (422) naming the first malformed or overlong one."""
    too_long = [item for item in items if len(item) > 2 * MAX_NAME_CHARS]
    if too_long:
        raise BadInput(f"bad tag filter {too_long[0][:80]!r}: expected family=value")
    return pairs(items, "tag filter", "family")


def hits_out(hits: list[Hit]) -> list[HitOut]:
    return [HitOut(id=h.id, score=h.score, title=h.title, tags=h.tags, attributes=h.attributes, numbers=h.numbers,
                   highlights=h.highlights) for h in hits]


# ---- reads ------------------------------------------------------------------------------------------------------
@router.get("/healthz", response_model=HealthOut, tags=["ops"])
def healthz(state: State) -> HealthOut:
    """Ready: the store and index answer (and how many products each holds)."""
    return HealthOut(status="ok", products=state.store.count_products(), indexed=state.backend.count(),
                     model=state.model_name() is not None)


@router.get("/metrics", tags=["ops"], response_class=Response)
def metrics(state: State) -> Response:
    """Prometheus metrics: request latency histograms, index size, tags emitted, products added/deleted."""
    state.refresh_sizes()
    state.metrics.reviewed(review_stats(state.store, state.review))
    return Response(state.metrics.render(), media_type=state.metrics.content_type)


@router.get("/similar/{product_id:path}", response_model=SimilarOut, tags=["storefront"])
def similar(
    state: State, product_id: PathId, tag: TagFilter = [],  # noqa: B006 (FastAPI copies query defaults)
    k: Annotated[int, Query(ge=1, le=MAX_K, description="How many products.")] = 10,
    diversity: Annotated[str | None, Query(max_length=200, description="mmr[:lambda] or cap:family[:n].")] = None,
    mode: Annotated[recs.SimilarMode, Query(description="content (vectors), behaviour (bought together) or blend.")]
    = "content",
    user: Annotated[str | None, Query(max_length=MAX_ID_CHARS, description="Re-rank for this user.")] = None,
) -> SimilarOut:
    """The `k` products nearest to this one (never itself), optionally only those with the given tags, optionally
    re-ranked so near-duplicates do not fill the list."""
    filters = tag_filters(tag)
    recs.check_similar_options(mode, bool(filters), bool(diversity))
    if mode != "content":
        found = recs.similar(state.recs.get(), product_id, k, mode, state.settings.behaviour.blend_behaviour_weight)
        products = {p.id: p for p in state.store.products([f.id for f in found])}
        tags = state.store.effective_tags([f.id for f in found])
        hits = [Hit(f.id, f.score, products[f.id].title if f.id in products else "",
                    {fam: [v for v, *_ in vals] for fam, vals in tags.get(f.id, {}).items()}) for f in found]
        return SimilarOut(id=product_id, hits=hits_out(personalised(state, hits, user)))
    hits = storefront.similar(state.backend, product_id, k, filters or None, parse_diversity(diversity))
    return SimilarOut(id=product_id, hits=hits_out(personalised(state, hits, user)))


def personalised(state: ServiceState, hits: list[Hit], user: str | None) -> list[Hit]:
    """`hits` re-ranked by the user's affinity (their profile from events); unchanged without a known user."""
    if not user or not hits:
        return hits
    order = recs.rerank_for_user(state.settings, state.recs.get(), state.recs.log, user, [h.id for h in hits],
                                 np.array([h.score for h in hits]))
    return [hits[i] for i in order]


@router.get("/search", response_model=SearchOut, tags=["storefront"])
def search(
    state: State,
    q: Annotated[str, Query(max_length=MAX_QUERY_CHARS, description="Free text, any language.")] = "",
    tag: TagFilter = [],  # noqa: B006
    attr: Annotated[list[str], Query(max_length=20, description="Keyword attribute filter `name=value`.")] = [],  # noqa: B006
    range_: Annotated[list[str], Query(alias="range", max_length=20,
                                       description="Numeric range `name=min:max` (`price=10:50`, `price=:50`).")] = [],  # noqa: B006
    facet: Annotated[list[str], Query(max_length=20, description="Tag family to count (repeatable).")] = [],  # noqa: B006
    attr_facet: Annotated[list[str], Query(max_length=20, description="Keyword attribute to count.")] = [],  # noqa: B006
    range_facet: Annotated[list[str], Query(max_length=20, description="Buckets `name=edge,edge,...`.")] = [],  # noqa: B006
    size: Annotated[int, Query(description="Hits per page (up to `search.max_size`).")] = 10,
    from_: Annotated[int, Query(alias="from", description="Hits to skip (from + size up to `search.max_window`).")] = 0,
    cursor: Annotated[str | None, Query(max_length=2000, description="`cursor` of the previous page.")] = None,
    sort: Annotated[str, Query(description="relevance, price_asc, price_desc, newest or popularity.")] = "relevance",
    highlight: bool = False,
    diversity: Annotated[str | None, Query(max_length=200, description="mmr[:lambda] or cap:family[:n].")] = None,
    query_tags: Annotated[str | None, Query(description="boost, suggest or off (default: setting).")] = None,
    user: Annotated[str | None, Query(max_length=MAX_ID_CHARS, description="Re-rank this page for this user.")]
    = None,
) -> SearchOut:
    """Hybrid search, as `shoptag search`: BM25 and the text encoder's kNN fused by reciprocal rank, with
    filters, facets, sorting, pages, highlights and query understanding. A bad parameter is a 422 naming it."""
    request = SearchRequest(text=q, tags=tag, attributes=attr, ranges=range_, facets=facet, attribute_facets=attr_facet,
                            range_facets=range_facet, size=size, offset=from_, cursor=cursor, sort=sort,
                            highlight=highlight, diversity=diversity, query_tags=query_tags)
    # no model trained yet, or one for other encoders: search runs without query tags
    answer = run_search(request, state.settings, state.store, state.backend, state.encoders, state.query_model())
    results = answer.results
    return SearchOut(
        total=results.total, total_relation=results.total_relation, hits=hits_out(personalised(state, results.hits, user)), cursor=results.cursor,
        facets={f: [{"value": v, "count": c} for v, c in counts] for f, counts in results.facets.items()},
        attribute_facets={a: [{"value": v, "count": c} for v, c in counts]
                          for a, counts in results.attribute_facets.items()},
        range_facets={n: [asdict(b) for b in buckets] for n, buckets in results.range_facets.items()},
        query_tags=[asdict(t) for t in answer.query_tags], suggested_filters=answer.suggested_filters,
        hint=answer.hint,
    )


@router.get("/products/{product_id:path}", response_model=ProductOut, tags=["products"])
def get_product(state: State, product_id: PathId) -> dict:
    """A product's tags, each with its source, status, score and evidence (sources, weights, neighbours)."""
    return explain(state.store, product_id)


# ---- writes -----------------------------------------------------------------------------------------------------
@router.post("/products", response_model=ProductsOut, tags=["products"], **writer)
def post_products(state: State, body: Annotated[ProductIn | Annotated[list[ProductIn], Field(min_length=1)], Body(
        description="One product, or a JSON array of up to `service.max_batch` products.")]) -> ProductsOut:
    """Validate, store, tag and index products now; they are in `/similar` and `/search` once this answers."""
    items = body if isinstance(body, list) else [body]
    checked_batch(len(items), state.settings)
    products, problems = validated_products(items, state.settings, state.decodes)
    if problems:
        state.metrics.rejects.inc(len(problems))
        raise HTTPException(422, problems)
    return ProductsOut(products=add_products(state, products))


@router.delete("/products/{product_id:path}", response_model=DeletedOut, tags=["products"], **writer)
def delete(state: State, product_id: PathId) -> DeletedOut:
    """Remove a product from the store and from search (its feedback log is kept)."""
    if not delete_product(state, product_id):
        raise NotFound(f"unknown product id {product_id!r}")
    return DeletedOut(id=product_id, deleted=True)


@router.post("/feedback", response_model=FeedbackOut, tags=["products"], **writer)
def feedback(state: State, body: Annotated[Correction | Annotated[list[Correction], Field(min_length=1)], Body(
        description="One correction or a JSON array of them.")]) -> FeedbackOut:
    """Corrections: they become the product's tags in that family, win over the model for good (a later
    `POST /products` of the same product keeps them) and train the next model. All or nothing."""
    items = body if isinstance(body, list) else [body]
    checked_batch(len(items), state.settings)
    ids = apply_corrections(state, [(c.id, c.family, c.values) for c in items])
    return FeedbackOut(applied=len(items), products=ids)
