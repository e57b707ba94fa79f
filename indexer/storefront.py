"""One storefront request on any backend: checked before anything is sent, positioned by its cursor,
re-ranked for diversity when asked, highlighted, and handed back with the cursor of the next page.

The backends answer plain pages (`offset`/`size`, or `after` for field sorts); everything a storefront adds on
top happens here, once, so the embedded store and Elasticsearch behave the same.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..core.errors import BadInput
from .backend import SearchBackend
from .diversity import capped_order, mmr_order
from .documents import Diversity, Hit, SearchQuery, SearchResults
from .highlight import highlights
from .paging import Known, Limits, apply_cursor, check_query, encode_cursor

DIVERSITY_POOL = 4  # a diversity re-rank chooses each page among this many times as many candidates


def search(backend: SearchBackend, query: SearchQuery, limits: Limits, known: Known,
           cursor: str | None = None) -> SearchResults:
    """`query` on `backend`; `BadInput` (nothing sent) for a bad query or cursor."""
    check_query(query, limits, known)
    if cursor:
        if query.offset:
            raise BadInput("give either a page (from, --page) or a cursor, not both")
        query = apply_cursor(query, cursor, backend.index_version(), limits)
    if query.diversity is not None:
        results = _diversified(backend, query, limits)
    else:
        results = backend.search(query)
    results.cursor = _next_cursor(backend, query, results, limits)
    if query.highlight:
        results.hits = [_highlighted(hit, query.text) for hit in results.hits]
    return results


def similar(backend: SearchBackend, product_id: str, k: int, filters: dict[str, list[str]] | None,
            diversity: Diversity | None = None) -> list[Hit]:
    """`backend.similar`, re-ranked for diversity when asked (among `DIVERSITY_POOL` × `k` neighbours)."""
    if diversity is None:
        return backend.similar(product_id, k, filters)
    pool = backend.similar(product_id, DIVERSITY_POOL * k, filters)
    return [pool[i] for i in _order(backend, pool, diversity, k)[:k]]


def _diversified(backend: SearchBackend, query: SearchQuery, limits: Limits) -> SearchResults:
    """The page of the re-ranked list: candidates are the first `DIVERSITY_POOL` pages' worth of the ranking
    (at most the window), re-ranked as a whole, so pages never overlap."""
    depth = min(limits.max_window, max(DIVERSITY_POOL * query.size, query.offset + query.size))
    pool = backend.search(replace(query, offset=0, size=depth, diversity=None, highlight=False))
    order = _order(backend, pool.hits, query.diversity, query.size)
    pool.hits = [pool.hits[i] for i in order[query.offset : query.offset + query.size]]
    return pool


def _order(backend: SearchBackend, hits: list[Hit], diversity: Diversity, block: int) -> list[int]:
    if diversity.kind == "mmr":
        vectors = backend.vectors([h.id for h in hits]) if hits else np.zeros((0, 1), dtype=np.float32)
        return mmr_order(vectors, diversity.lambda_)
    return capped_order([h.tags.get(diversity.family, []) for h in hits], diversity.max_per_value, block)


def _next_cursor(backend: SearchBackend, query: SearchQuery, results: SearchResults, limits: Limits) -> str | None:
    """The next page's cursor: an offset for rankings (ending at the window or the total), the last hit's sort
    values for field sorts and browsing (while pages come back full)."""
    if query.ranked or query.diversity is not None:
        following = query.offset + query.size
        if following >= results.total or following + query.size > limits.max_window or len(results.hits) < query.size:
            return None
        return encode_cursor(query, backend.index_version(), {"offset": following})
    seen = query.seen + len(results.hits)
    if len(results.hits) < query.size or not results.hits[-1].sort_values:
        return None
    if results.total_relation == "eq" and seen >= results.total:  # a full last page
        return None
    return encode_cursor(query, backend.index_version(), {"after": list(results.hits[-1].sort_values), "seen": seen})


def _highlighted(hit: Hit, text: str) -> Hit:
    return replace(hit, highlights=highlights({"title": hit.title, "description": hit.description}, text))
