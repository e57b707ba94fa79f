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

from ..documents import MISSING_LAST, SearchQuery
from ..search_common import has_words, range_buckets

TEXT_FIELDS = ["title^3", "description", "tag_text^2"]
SOURCE = {"includes": ["id", "title", "description", "tags", "attributes", "numbers"]}
MAX_CANDIDATES = 10_000  # Elasticsearch's limit on kNN num_candidates
# document sort keys (`SORTS`) -> index fields
SORT_FIELDS = {"price": "numbers.price", "listed_at": "listed_at", "popularity": "popularity"}


def tag_filters(filters: dict[str, list[str]]) -> list[dict[str, Any]]:
    """One `terms` clause per tag family."""
    return [{"terms": {f"tags.{family}": list(values)}} for family, values in sorted(filters.items())]


def query_filters(query: SearchQuery, *, knn: bool = False) -> list[dict[str, Any]]:
    """Tag filters, keyword attribute filters (`terms` on the flattened `attributes`) and numeric ranges (`knn`:
    the kNN half's, with the tags the query names)."""
    clauses = tag_filters(query.knn_filters if knn else query.filters)
    clauses += [{"terms": {f"attributes.{name}": list(values)}} for name, values in sorted(query.attributes.items())]
    for name, (low, high) in sorted(query.ranges.items()):
        bounds = {key: bound for key, bound in (("gte", low), ("lte", high)) if bound is not None}
        clauses.append({"range": {f"numbers.{name}": bounds}})
    return clauses


def facet_aggs(query: SearchQuery) -> dict[str, Any]:
    """Aggregations named `tags.<family>`, `attributes.<name>` (terms) and `numbers.<name>` (range buckets)."""
    aggs: dict[str, Any] = {
        f"tags.{family}": {"terms": {"field": f"tags.{family}", "size": query.facet_size}} for family in query.facets}
    for name in query.attribute_facets:
        aggs[f"attributes.{name}"] = {"terms": {"field": f"attributes.{name}", "size": query.facet_size}}
    for name, edges in query.range_facets.items():
        ranges = []
        for key, low, high in range_buckets(edges):
            bucket: dict[str, Any] = {"key": key}
            if low is not None:
                bucket["from"] = low
            if high is not None:
                bucket["to"] = high
            ranges.append(bucket)
        aggs[f"numbers.{name}"] = {"range": {"field": f"numbers.{name}", "ranges": ranges}}
    return aggs


def text_query(query: SearchQuery) -> dict[str, Any]:
    """BM25 over title, description and tag values within the filters, plus `boost_weight` for each boosted
    tag family a match carries; all filtered products without text."""
    clause: dict[str, Any] = {"filter": query_filters(query)}
    if has_words(query.text):
        clause["must"] = [_match(query)]
        clause["should"] = boost_clauses(query)
    return {"bool": clause}


def boost_clauses(query: SearchQuery) -> list[dict[str, Any]]:
    """One `terms` clause per boosted family: a constant `boost_weight` when the product has one of its values."""
    return [{"terms": {f"tags.{family}": list(values), "boost": query.boost_weight}}
            for family, values in sorted(query.boosts.items())]


def _match(query: SearchQuery) -> dict[str, Any]:
    return {"multi_match": {"query": query.text, "fields": TEXT_FIELDS}}


def knn_clause(
    vector: np.ndarray,
    k: int,
    clauses: list[dict[str, Any]],
    *,
    field: str = "text_vector",
    exclude_id: str | None = None,
    min_similarity: float | None = None,
) -> dict[str, Any]:
    """kNN over `field`, pre-filtered by the filter `clauses` (and without `exclude_id`); with
    `min_similarity`, only products at least that cosine-similar (`similarity` is the raw cosine, not the score)."""
    clauses = list(clauses)
    if exclude_id is not None:
        clauses.append({"bool": {"must_not": [{"ids": {"values": [exclude_id]}}]}})
    clause = {
        "field": field,
        "query_vector": np.asarray(vector, dtype=np.float64).tolist(),
        "k": k,
        "num_candidates": min(MAX_CANDIDATES, max(100, 2 * k)),
        "filter": clauses,
    }
    if min_similarity is not None:
        clause["similarity"] = min_similarity
    return clause


def search_knn(query: SearchQuery, *, named: bool = False) -> dict[str, Any]:
    """The kNN half of a storefront query: the window's nearest filtered products within the cutoff (-1, the
    lowest cosine, without one: the stored search template always renders the parameter); `named`: among the
    products carrying the tags the query names."""
    cutoff = -1.0 if query.min_similarity is None else query.min_similarity
    return knn_clause(query.vector, window(query), query_filters(query, knn=named), min_similarity=cutoff)


def knn_lists(query: SearchQuery) -> list[dict[str, Any]]:
    """The kNN clauses of a query with a vector: among the named tags' products (when the query names any),
    then among all filtered products; each is one ranked list of the fusion."""
    named = [search_knn(query, named=True)] if query.vector_filters else []
    return [*named, search_knn(query)]


def ranked_lists(query: SearchQuery) -> int:
    """How many ranked lists a relevance query fuses: BM25 when it has words, and its kNN lists."""
    return has_words(query.text) + (1 + bool(query.vector_filters) if query.vector is not None else 0)


def window(query: SearchQuery) -> int:
    """How many candidates each list ranks: at least down to the end of the requested page."""
    return max(query.window, query.offset + query.size)


def hybrid_body(query: SearchQuery) -> dict[str, Any]:
    """BM25 and kNN fused by the `rrf` retriever: the body the stored search template renders to."""
    return {
        "from": query.offset,
        "size": query.size,
        "_source": SOURCE,
        "retriever": {
            "rrf": {
                "retrievers": [
                    *([{"standard": {"query": text_query(query)}}] if has_words(query.text) else []),
                    *({"knn": clause} for clause in knn_lists(query)),
                ],
                "rank_window_size": window(query),
                "rank_constant": query.rank_constant,
            }
        },
        "aggregations": facet_aggs(query),
    }


def score_sum_body(query: SearchQuery) -> dict[str, Any]:
    """BM25 and kNN in one request without a retriever, scores added: what the stored search template renders to
    on a licence without `rrf` (a template cannot fuse on the client; the backend itself fuses by rank there)."""
    return {
        "from": query.offset,
        "size": query.size,
        "_source": SOURCE,
        "query": text_query(query),
        "knn": knn_lists(query),
        "aggregations": facet_aggs(query),
    }


def text_body(query: SearchQuery, size: int | None = None) -> dict[str, Any]:
    """BM25 only (or, without text, all filtered products in id order) with facets and an exact total;
    `size` given: the top `size` from the first (client-side fusion's BM25 list)."""
    body: dict[str, Any] = {
        "from": query.offset if size is None else 0,
        "size": query.size if size is None else size,
        "_source": SOURCE,
        "query": text_query(query),
        "track_total_hits": True,
        "aggregations": facet_aggs(query),
    }
    if not has_words(query.text):
        body.update(_sorted(query))
    return body


def knn_body(query: SearchQuery, size: int | None = None, *, clause: dict[str, Any] | None = None) -> dict[str, Any]:
    """kNN only: the window's nearest filtered products (the candidates facets count), the requested page of them
    returned; `size` given: the top `size` (client-side fusion's kNN list); `clause`: one of `knn_lists`
    instead of the plain kNN half."""
    return {
        "from": query.offset if size is None else 0,
        "size": query.size if size is None else size,
        "_source": SOURCE,
        "knn": search_knn(query) if clause is None else clause,
        "aggregations": facet_aggs(query),
    }


def union_query(query: SearchQuery, knn_ids: list[str]) -> dict[str, Any]:
    """Text matches plus the kNN candidates `knn_ids`, within the filters: what the `rrf` retriever counts."""
    should: list[dict[str, Any]] = [{"ids": {"values": knn_ids}}]
    if has_words(query.text):
        should.insert(0, _match(query))
    return {"bool": {"filter": query_filters(query), "should": should, "minimum_should_match": 1}}


def union_body(query: SearchQuery, knn_ids: list[str]) -> dict[str, Any]:
    """Client-side fusion's third request: total and facets over text matches plus kNN candidates."""
    return {"size": 0, "query": union_query(query, knn_ids), "track_total_hits": True,
            "aggregations": facet_aggs(query)}


def sorted_body(query: SearchQuery, knn_ids: list[str] | None) -> dict[str, Any]:
    """A field sort (price, newest, popularity) over the query's candidates: text matches (plus `knn_ids`, the
    kNN candidates, when the query has a vector), or every filtered product without text or vector."""
    if knn_ids is not None:
        scope = union_query(query, knn_ids)
    else:
        scope = text_query(query)
        scope["bool"].pop("should", None)  # boosts only change scores, which do not order a field sort
    return {"size": query.size, "_source": SOURCE, "query": scope, "track_total_hits": True,
            "aggregations": facet_aggs(query), **_sorted(query)}


def _sorted(query: SearchQuery) -> dict[str, Any]:
    """Sort clauses (the sort key, missing values last, then id) with `search_after` or `from`."""
    key = query.sort_key
    if key is None:
        sort: list[Any] = ["id"]  # browsing: id order (a field name sorts ascending)
    else:
        name, descending = key
        sort = [{SORT_FIELDS[name]: {"order": "desc" if descending else "asc",
                                     "missing": -MISSING_LAST if descending else MISSING_LAST}}, "id"]
    page: dict[str, Any] = {"search_after": list(query.after)} if query.after is not None else {"from": query.offset}
    return {"sort": sort, **page}


def similar_body(
    vector: np.ndarray, k: int, filters: dict[str, list[str]], exclude_id: str, field: str = "fused_vector",
) -> dict[str, Any]:
    """The `k` nearest products by `field` (the fused vector), within `filters`, never `exclude_id` itself."""
    return {
        "size": k,
        "_source": SOURCE,
        "knn": knn_clause(vector, k, tag_filters(filters), field=field, exclude_id=exclude_id),
    }


def template_params(query: SearchQuery) -> dict[str, Any]:
    """Params of the stored search template (``search.{version}.mustache``) for `query`."""
    knn = search_knn(query)
    return {
        "text": query.text,
        "vector": knn["query_vector"],
        "filters": knn["filter"],
        "named": bool(query.vector_filters),  # renders the kNN list among the named tags' products
        "knn_filters": query_filters(query, knn=True),
        "boosts": boost_clauses(query) if has_words(query.text) else [],
        "aggs": facet_aggs(query),
        "from": query.offset,
        "size": query.size,
        "window": window(query),
        "num_candidates": knn["num_candidates"],
        "rank_constant": query.rank_constant,
        "similarity": knn["similarity"],
    }


def template_id(alias: str, version: str) -> str:
    """The id the storefront calls the search template of `alias` by."""
    return f"{alias}-search-{version}"


def template_script(source: str) -> dict[str, Any]:
    """The `put_script` body storing the mustache `source` as a search template."""
    return {"script": {"lang": "mustache", "source": source}}
