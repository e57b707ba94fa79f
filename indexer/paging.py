"""Paging a storefront query: checking a request before any backend sees it, and opaque cursors.

Two ways to page, the same on every backend:

- `offset` (from) + `size`, up to `max_window` hits deep. A relevance ranking ends there: the fusion ranks that
  many candidates, and past them relevance has no meaning. The cursor of a ranked query just carries the next
  offset.
- A cursor (search_after) for field sorts (price, newest, popularity) and browsing: it carries the sort values
  of the last hit (the sort key, then the id, so ties are broken the same way on every page) and pages as deep
  as the catalog goes, with no skipped or repeated product while the index is unchanged.

A cursor names the index version it was made on (a full reindex makes a new one) and a digest of the query it
belongs to; one from another version or another query is refused, never sent on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from dataclasses import dataclass, replace
from typing import Any

from ..core.errors import BadInput, UnknownFamily
from .documents import SORTS, SearchQuery

CURSOR_FORMAT = 1


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_size: int = 100  # hits per page
    max_window: int = 1000  # offset + size without a cursor; the deepest relevance ranking
    max_facet_size: int = 200
    max_buckets: int = 50  # range facet edges


@dataclass(frozen=True)
class Known:
    """Names a request may filter and facet on (anything else is a typo, and is refused)."""

    numeric: frozenset[str]  # declared numeric attributes
    attributes: frozenset[str]  # keyword attributes some product has
    families: frozenset[str] | None = None  # tag families the workspace holds (None: not checked)


def check_query(query: SearchQuery, limits: Limits, known: Known) -> None:
    """Raise `BadInput` naming the first problem of `query`; nothing about it reaches a backend before this."""
    if query.size < 1 or query.size > limits.max_size:
        raise BadInput(f"size must be between 1 and {limits.max_size}, got {query.size}")
    if query.offset < 0:
        raise BadInput(f"from must be 0 or more, got {query.offset}")
    if query.offset + query.size > limits.max_window:
        raise BadInput(f"from + size must be at most {limits.max_window} (got {query.offset + query.size}); "
                       "page further with the cursor of the previous page")
    if query.sort not in SORTS:
        raise BadInput(f"unknown sort {query.sort!r}: one of {', '.join(SORTS)}")
    if not 1 <= query.facet_size <= limits.max_facet_size:
        raise BadInput(f"facet size must be between 1 and {limits.max_facet_size}, got {query.facet_size}")
    for name, (low, high) in query.ranges.items():
        _check_numeric_name(name, known, "range filter")
        for bound in (low, high):
            if bound is not None and not math.isfinite(bound):
                raise BadInput(f"range filter {name}: bounds must be finite numbers, got {bound}")
        if low is not None and high is not None and low > high:
            raise BadInput(f"range filter {name}: min {low:g} is above max {high:g}")
    for name, edges in query.range_facets.items():
        _check_numeric_name(name, known, "range facet")
        if not 1 <= len(edges) <= limits.max_buckets:
            raise BadInput(f"range facet {name}: 1 to {limits.max_buckets} bucket edges, got {len(edges)}")
        if not all(math.isfinite(e) for e in edges) or any(a >= b for a, b in zip(edges, edges[1:])):
            raise BadInput(f"range facet {name}: edges must be finite and strictly ascending, got {list(edges)}")
    if known.families is not None:
        cap = [query.diversity.family] if query.diversity is not None and query.diversity.kind == "cap" else []
        for family in [*query.filters, *query.facets, *cap]:
            if family not in known.families:
                raise UnknownFamily(family, known.families)
    for name in [*query.attributes, *query.attribute_facets]:
        if name not in known.attributes:
            raise BadInput(f"unknown attribute {name!r}" + _choices(known.attributes))
    if query.diversity is not None:
        if not query.ranked:
            raise BadInput("diversity re-ranks a relevance ranking: it needs a text query and sort=relevance")
        if query.diversity.kind not in ("mmr", "cap"):
            raise BadInput(f"unknown diversity {query.diversity.kind!r}: mmr or cap")
        if not 0.0 <= query.diversity.lambda_ <= 1.0:
            raise BadInput(f"mmr lambda must be between 0 and 1, got {query.diversity.lambda_}")
        if query.diversity.kind == "cap" and (not query.diversity.family or query.diversity.max_per_value < 1):
            raise BadInput("diversity cap needs a tag family and a maximum of at least 1 per value")


def _check_numeric_name(name: str, known: Known, what: str) -> None:
    if name not in known.numeric:
        raise BadInput(f"{what} on {name!r}: not a numeric attribute" + _choices(known.numeric))


def _choices(names: frozenset[str]) -> str:
    shown = sorted(names)[:20]
    return f" (known: {', '.join(shown)}{', ...' if len(names) > 20 else ''})" if names else " (none are known)"


def query_digest(query: SearchQuery) -> str:
    """What a cursor must continue: the same text, filters, sort and re-rank (not the page size)."""
    shape = {
        "text": query.text, "filters": query.filters, "ranges": query.ranges, "attributes": query.attributes,
        "sort": query.sort, "boosts": query.boosts,
        "vector_filters": query.vector_filters,
        "diversity": None if query.diversity is None else [query.diversity.kind, query.diversity.lambda_,
                                                           query.diversity.family, query.diversity.max_per_value],
    }
    text = json.dumps(shape, sort_keys=True, ensure_ascii=False, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode_cursor(query: SearchQuery, index_version: str, position: dict[str, Any]) -> str:
    """An opaque cursor: `position` is {"offset": n} for ranked queries, {"after": [sort values], "seen": hits
    so far} otherwise."""
    payload = {"v": CURSOR_FORMAT, "index": index_version, "query": query_digest(query), **position}
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def apply_cursor(query: SearchQuery, cursor: str, index_version: str, limits: Limits) -> SearchQuery:
    """`query` positioned where `cursor` left off; `BadInput` for a cursor that is damaged, from another index
    version, or from another query."""
    try:
        payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(payload, dict) or payload.get("v") != CURSOR_FORMAT or not {"index", "query"} <= set(payload):
            raise ValueError("unknown format")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadInput("cursor is damaged: pass the cursor of the previous page unchanged") from None
    if payload.get("index") != index_version:
        raise BadInput("cursor is from another version of the index (it was rebuilt since): start from page 1")
    if payload.get("query") != query_digest(query):
        raise BadInput("cursor belongs to another query (text, filters or sort differ): start from page 1")
    if query.ranked or query.diversity is not None:
        offset = payload.get("offset")
        if not isinstance(offset, int) or offset < 0:
            raise BadInput("cursor is damaged: pass the cursor of the previous page unchanged")
        if offset + query.size > limits.max_window:
            raise BadInput(f"a relevance ranking ends after {limits.max_window} hits")
        return replace(query, offset=offset, after=None)
    after, seen = payload.get("after"), payload.get("seen", 0)  # cursors made before "seen": pages on
    if (not isinstance(after, list) or not after or not all(isinstance(v, (int, float, str)) for v in after)
            or not isinstance(seen, int) or seen < 0):
        raise BadInput("cursor is damaged: pass the cursor of the previous page unchanged")
    return replace(query, offset=0, after=tuple(after), seen=seen)
