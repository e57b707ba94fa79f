"""Request bodies for searching the product index, as plain dicts (so tests validate them against the spec).

Text matching uses the same field boosts as the embedded backend's bm25 weights. Filters are `terms` on the
keyword field of each tag family (values OR-ed, families AND-ed); facets are `terms` aggregations.

Hybrid search is one request with the `rrf` retriever. Clusters without it (older than 8.14, or a licence
without RRF) get `knn_body` and `text_body`, fused on the client by the same reciprocal rank fusion
(`search_common.rrf_fuse`), and `union_body` for the total and facets the retriever would have counted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..documents import SearchQuery
from ..search_common import has_words

TEXT_FIELDS = ["title^3", "description", "tag_text^2"]
SOURCE = {"includes": ["id", "title", "tags"]}
MAX_CANDIDATES = 10_000  # Elasticsearch's limit on kNN num_candidates


def tag_filters(filters: dict[str, list[str]]) -> list[dict[str, Any]]:
    """One `terms` clause per tag family."""
    return [{"terms": {f"tags.{family}": list(values)}} for family, values in sorted(filters.items())]


def facet_aggs(query: SearchQuery) -> dict[str, Any]:
    """A `terms` aggregation per requested family, named after it."""
    return {family: {"terms": {"field": f"tags.{family}", "size": query.facet_size}} for family in query.facets}


def text_query(query: SearchQuery) -> dict[str, Any]:
    """BM25 over title, description and tag values within the filters; all filtered products without text."""
    clause: dict[str, Any] = {"filter": tag_filters(query.filters)}
    if has_words(query.text):
        clause["must"] = [_match(query)]
    return {"bool": clause}


def _match(query: SearchQuery) -> dict[str, Any]:
    return {"multi_match": {"query": query.text, "fields": TEXT_FIELDS}}


def knn_clause(
    vector: np.ndarray,
    k: int,
    filters: dict[str, list[str]],
    *,
    field: str = "text_vector",
    exclude_id: str | None = None,
) -> dict[str, Any]:
    """kNN over `field`, pre-filtered by tag filters (and without `exclude_id`)."""
    clauses = tag_filters(filters)
    if exclude_id is not None:
        clauses.append({"bool": {"must_not": [{"ids": {"values": [exclude_id]}}]}})
    return {
        "field": field,
        "query_vector": np.asarray(vector, dtype=np.float64).tolist(),
        "k": k,
        "num_candidates": min(MAX_CANDIDATES, max(100, 2 * k)),
        "filter": clauses,
    }


def hybrid_body(query: SearchQuery) -> dict[str, Any]:
    """BM25 and kNN fused by the `rrf` retriever: the body the stored search template renders to."""
    return {
        "size": query.size,
        "_source": SOURCE,
        "retriever": {
            "rrf": {
                "retrievers": [
                    {"standard": {"query": text_query(query)}},
                    {"knn": knn_clause(query.vector, query.window, query.filters)},
                ],
                "rank_window_size": query.window,
                "rank_constant": query.rank_constant,
            }
        },
        "aggregations": facet_aggs(query),
    }


def text_body(query: SearchQuery, size: int | None = None) -> dict[str, Any]:
    """BM25 only (or, without text, all filtered products in id order) with facets and an exact total."""
    body: dict[str, Any] = {
        "size": query.size if size is None else size,
        "_source": SOURCE,
        "query": text_query(query),
        "track_total_hits": True,
        "aggregations": facet_aggs(query),
    }
    if not has_words(query.text):
        body["sort"] = ["id"]  # a field name sorts ascending
    return body


def knn_body(query: SearchQuery, size: int | None = None) -> dict[str, Any]:
    """kNN only: the `window` nearest filtered products (the candidates facets count), `size` of them returned."""
    return {
        "size": query.size if size is None else size,
        "_source": SOURCE,
        "knn": knn_clause(query.vector, query.window, query.filters),
        "aggregations": facet_aggs(query),
    }


def union_body(query: SearchQuery, knn_ids: list[str]) -> dict[str, Any]:
    """Client-side fusion's third request: total and facets over text matches plus kNN candidates, which is
    what the `rrf` retriever counts."""
    return {
        "size": 0,
        "query": {
            "bool": {
                "filter": tag_filters(query.filters),
                "should": [_match(query), {"ids": {"values": knn_ids}}],
                "minimum_should_match": 1,
            }
        },
        "track_total_hits": True,
        "aggregations": facet_aggs(query),
    }


def similar_body(
    vector: np.ndarray, k: int, filters: dict[str, list[str]], exclude_id: str, field: str = "fused_vector",
) -> dict[str, Any]:
    """The `k` nearest products by `field` (the fused vector), within `filters`, never `exclude_id` itself."""
    return {
        "size": k,
        "_source": SOURCE,
        "knn": knn_clause(vector, k, filters, field=field, exclude_id=exclude_id),
    }


def template_params(query: SearchQuery) -> dict[str, Any]:
    """Params of the stored search template (``search.{version}.mustache``) for `query`."""
    knn = knn_clause(query.vector, query.window, query.filters)
    return {
        "text": query.text,
        "vector": knn["query_vector"],
        "filters": knn["filter"],
        "aggs": facet_aggs(query),
        "size": query.size,
        "window": query.window,
        "num_candidates": knn["num_candidates"],
        "rank_constant": query.rank_constant,
    }


def template_id(alias: str, version: str) -> str:
    """The id the storefront calls the search template of `alias` by."""
    return f"{alias}-search-{version}"


def template_script(source: str) -> dict[str, Any]:
    """The `put_script` body storing the mustache `source` as a search template."""
    return {"script": {"lang": "mustache", "source": source}}
