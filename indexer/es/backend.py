"""`SearchBackend` on Elasticsearch 8.15+/9.x (or anything speaking its REST API), behind one alias."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from elasticsearch import ApiError, Elasticsearch, NotFoundError

from shoptag.core.errors import BackendRefused, BadInput, NotFound
from shoptag.core.settings import ESSettings

from ..documents import Hit, RangeBucket, SearchDoc, SearchQuery, SearchResults, WriteReport
from ..neighbours import Neighbours
from ..search_common import VectorDims, batches, changed_docs, has_words, range_buckets, rrf_fuse
from .client import identify_server, make_client, unavailable_as_error
from .reindex import (
    bulk_write, delete_actions, ensure_alias, full_reindex, index_actions, rollback, unstored_fused_fits,
)
from .search import (
    SOURCE, hybrid_body, knn_body, knn_lists, ranked_lists, similar_body, sorted_body, tag_filters, text_body,
    union_body, window,
)


log = logging.getLogger("shoptag.es")


class ESBackend:
    """Products in the index behind `settings.index_alias`; writes go through the alias, reindexes swap it.

    With `neighbours`, `similar` (and the vectors diversity re-ranks by) come from FAISS, kept in step by this
    backend's writes; without, or for a product FAISS does not hold, from Elasticsearch's kNN.
    Raises `BackendUnavailable` when the cluster cannot be reached, here or later.
    """

    name = "elasticsearch"

    def __init__(self, settings: ESSettings, dims: VectorDims, client: Elasticsearch | None = None,
                 numeric: Sequence[str] = (), neighbours: Neighbours | None = None) -> None:
        self.settings = settings
        self.neighbours = neighbours
        self.dims = dims
        self.numeric = tuple(numeric)  # declared numeric attributes: a `double` field each
        self.alias = settings.index_alias
        self._client = client if client is not None else make_client(settings)
        self.server = identify_server(self._client, settings.url or "")  # pins the client to the server's major
        if settings.vector_index_type.startswith("bbq") and not self.server.bbq:
            raise BadInput(f"es.vector_index_type={settings.vector_index_type} needs Elasticsearch 8.16 or later; "
                             f"the server is {self.server}")
        # the rrf retriever: forced by `es.hybrid`, else decided by the licence (unknown: tried, and dropped on the
        # cluster's licence error); each connection decides afresh, so a new licence is seen on reconnect
        self._rrf = {"client": False, "rrf": True}.get(settings.hybrid, self.server.rrf is not False)
        if settings.hybrid == "auto" and self.server.rrf is False:
            log.info("the %s licence of %s has no rrf retriever: hybrid search fuses BM25 and kNN here",
                     self.server.licence, self.server)

    # ---- writing --------------------------------------------------------------------------------------------
    def upsert(self, docs: Iterable[SearchDoc]) -> WriteReport:
        """Write through the alias without forcing a refresh: searchable within `es.refresh_interval`, or on
        return with `es.wait_for_refresh`."""
        with unavailable_as_error(self.settings.url or ""):
            ensure_alias(self._client, self.settings, self.dims, self.numeric, rrf=self.server.rrf is not False)
            unfit: list[tuple[str, str]] = []
            sent: list[tuple[str, np.ndarray | None]] = []
            actions = index_actions(_noting(unstored_fused_fits(docs, self.dims, unfit), sent), self.alias,
                                    self.settings.mapping_version, fused=self.dims.image is not None,
                                    as_base64=self.server.base64_vectors, numeric=self.numeric)
            report = bulk_write(self._client, actions, self.settings, refresh=self._refresh)
            report.failed = unfit + report.failed
        if self.neighbours is not None:
            failed = {pid for pid, _ in report.failed}
            self.neighbours.log([(pid, vector) for pid, vector in sent if pid not in failed])
        return report

    def delete(self, ids: Sequence[str]) -> WriteReport:
        with unavailable_as_error(self.settings.url or ""):
            if not self._client.indices.exists_alias(name=self.alias):
                return WriteReport()
            report = bulk_write(self._client, delete_actions(ids, self.alias), self.settings, refresh=self._refresh)
        if self.neighbours is not None:
            failed = {pid for pid, _ in report.failed}
            self.neighbours.log([(pid, None) for pid in ids if pid not in failed])
        return report

    def reindex(self, docs: Iterable[SearchDoc], *, incremental: bool = False) -> WriteReport:
        """Full: new index + one alias swap (see `reindex.full_reindex`); incremental: upsert changed docs only,
        judged by the fingerprint stored with each document."""
        if not incremental:
            staged = self.neighbours.staged() if self.neighbours is not None else None
            if staged is not None:  # FAISS is filled as the documents stream past, live once the alias moved
                docs = _staging(docs, staged, self.settings.bulk_chunk_size)
            with unavailable_as_error(self.settings.url or ""):
                report = full_reindex(self._client, self.settings, self.dims, docs, self.server, self.numeric)
            if staged is not None and report.ok:
                self.neighbours.replace(staged)
            return report
        changed: list[SearchDoc] = []
        with unavailable_as_error(self.settings.url or ""):
            ensure_alias(self._client, self.settings, self.dims, self.numeric, rrf=self.server.rrf is not False)
            for batch in batches(docs, self.settings.bulk_chunk_size):
                changed += changed_docs(batch, self._fingerprints([d.id for d in batch]))
        return self.upsert(changed)

    def rollback(self) -> tuple[str, str]:
        """Put the index the last full reindex replaced back behind the alias; (from, to) index names."""
        with unavailable_as_error(self.settings.url or ""):
            return rollback(self._client, self.settings)

    @property
    def _refresh(self) -> bool | str:
        return "wait_for" if self.settings.wait_for_refresh else False

    # ---- reading --------------------------------------------------------------------------------------------
    def search(self, query: SearchQuery) -> SearchResults:
        """Hybrid (rrf, or fused here when the cluster has no rrf), BM25 only, kNN only, a field sort over the
        query's candidates, or filtered browse."""
        with unavailable_as_error(self.settings.url or ""):
            try:
                if query.sort_key is not None:
                    knn_ids = None
                    if query.vector is not None:
                        knn_ids = list(dict.fromkeys(h["_id"] for hits in self._knn_hits(query) for h in hits))
                    return _results(self._search(sorted_body(query, knn_ids)), query)
                if ranked_lists(query) > 1:
                    return self._hybrid(query)
                body = knn_body(query) if query.vector is not None else text_body(query)
                return _results(self._search(body), query)
            except NotFoundError:  # no index yet: nothing to find
                return _results({"hits": {"hits": [], "total": {"value": 0}}}, query)

    def index_version(self) -> str:
        """The indices behind the alias: a full reindex puts a new one there."""
        with unavailable_as_error(self.settings.url or ""):
            try:
                return ",".join(sorted(self._client.indices.get_alias(name=self.alias)))
            except NotFoundError:
                return ""

    def vectors(self, ids: list[str]) -> np.ndarray:
        """Fused vectors of `ids` in that order (a row of zeros for a product without one): from FAISS when it
        holds them all, else asked of Elasticsearch."""
        if self.neighbours is not None:
            held = self.neighbours.vectors(ids)
            if len(held) == len(set(ids)):
                return np.vstack([held[pid] for pid in ids]) if ids else np.zeros((0, self.dims.fused), np.float32)
        field = self._similar_field
        source: dict[str, Any] = {"includes": [field]}
        if self.server.excludes_vectors:
            source["exclude_vectors"] = False
        with unavailable_as_error(self.settings.url or ""):
            found = self._search({"size": len(ids), "query": {"ids": {"values": ids}}, "_source": source})["hits"]["hits"]
        by_id = {h["_id"]: h["_source"][field] for h in found if h.get("_source", {}).get(field) is not None}
        out = np.zeros((len(ids), self.dims.fused), dtype=np.float32)
        for row, pid in enumerate(ids):
            if pid in by_id:
                value = by_id[pid]  # base64 big-endian float32 where the server stores it so (9.3+)
                out[row] = np.frombuffer(base64.b64decode(value), dtype=">f4") if isinstance(value, str) else value
        return out

    @property
    def _similar_field(self) -> str:
        """The vector `similar` compares: the fused one, which a text-only index does not store (it is the text
        vector there)."""
        return "fused_vector" if self.dims.image is not None else "text_vector"

    def similar(self, product_id: str, k: int = 10, filters: dict[str, list[str]] | None = None) -> list[Hit]:
        """Nearest products by fused vector within `filters`, never the product itself; `NotFound` if unknown.
        From FAISS where it holds the product, else by Elasticsearch kNN."""
        with unavailable_as_error(self.settings.url or ""):
            if self.neighbours is not None:
                found = self._similar_from_faiss(product_id, k, filters or {})
                if found is not None:
                    return found
            field = self._similar_field
            vector = self._vector(product_id, field)
            body = similar_body(vector, k, filters or {}, product_id, field=field)
            return [_hit(h) for h in self._search(body)["hits"]["hits"]]

    def count(self) -> int:
        with unavailable_as_error(self.settings.url or ""):
            try:
                return int(self._client.count(index=self.alias)["count"])
            except NotFoundError:
                return 0

    def close(self) -> None:
        self._client.close()
        if self.neighbours is not None:
            self.neighbours.close()

    def _similar_from_faiss(self, product_id: str, k: int, filters: dict[str, list[str]]) -> list[Hit] | None:
        """FAISS ranks, Elasticsearch keeps those that are live and pass `filters` and returns their documents;
        the FAISS list widens until `k` pass. None when FAISS does not hold the product."""
        fetch = 4 * k
        while True:
            near = self.neighbours.nearest(product_id, fetch)
            if near is None:
                return None
            body = {"size": len(near), "_source": SOURCE, "query": {"bool": {"filter": [
                {"ids": {"values": [pid for pid, _ in near]}}, *tag_filters(filters)]}}}
            try:
                found = {h["_id"]: h for h in self._search(body)["hits"]["hits"]} if near else {}
            except NotFoundError:  # no index yet
                return None
            kept = [_hit(found[pid], similarity) for pid, similarity in near if pid in found]
            if len(kept) >= k or len(near) < fetch:
                return kept[:k]
            fetch *= 4

    def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._client.search(index=self.alias, body=body).body

    def _hybrid(self, query: SearchQuery) -> SearchResults:
        if self._rrf:
            try:
                return _results(self._search(hybrid_body(query)), query)
            except ApiError as error:
                if self.settings.hybrid == "rrf" or not _rrf_refused(error):
                    raise
                self._rrf = False
                log.warning("%s refused the rrf retriever (%s); hybrid search fuses BM25 and kNN here from now on",
                            self.server, error.body.get("error", {}).get("reason") if isinstance(error.body, dict) else error)
        return self._fuse_here(query)

    def _fuse_here(self, query: SearchQuery) -> SearchResults:
        """Reciprocal rank fusion of the BM25 search (when the query has words) and the kNN searches, counted
        over their union as rrf would."""
        knn = self._knn_hits(query)
        text = [self._search(text_body(query, size=window(query)))["hits"]["hits"]] if has_words(query.text) else []
        lists = [*text, *knn]
        union = self._search(union_body(query, list(dict.fromkeys(h["_id"] for hits in knn for h in hits))))
        by_id = {h["_id"]: h for hits in lists for h in hits}
        fused = rrf_fuse([[h["_id"] for h in hits] for hits in lists], query.rank_constant)
        page = fused[query.offset : query.offset + query.size]
        results = _results(union, query)
        results.hits = [_hit(by_id[pid], score) for pid, score in page]
        return results

    def _knn_hits(self, query: SearchQuery) -> list[list[dict[str, Any]]]:
        """The window's hits of each kNN list of `query` (`search.knn_lists`)."""
        return [self._search(knn_body(query, size=window(query), clause=clause))["hits"]["hits"]
                for clause in knn_lists(query)]

    def _vector(self, product_id: str, field: str) -> list[float]:
        """A stored vector, asked for explicitly where the server leaves vectors out of `_source` (9.2+);
        `NotFound` for an unknown product, `BackendRefused` when the server returns the product without it."""
        source: dict[str, Any] = {"includes": [field]}
        if self.server.excludes_vectors:
            source["exclude_vectors"] = False
        try:
            hits = self._search({"size": 1, "query": {"ids": {"values": [product_id]}}, "_source": source})["hits"]["hits"]
        except NotFoundError:  # no index yet
            hits = []
        if not hits:
            raise NotFound(f"unknown product id {product_id!r}")
        vector = hits[0].get("_source", {}).get(field)
        if vector is None:
            raise BackendRefused(f"Elasticsearch returned product {product_id!r} without its {field}")
        return vector

    def _fingerprints(self, ids: list[str]) -> dict[str, str]:
        found = self._client.mget(index=self.alias, ids=ids, source_includes=["fingerprint"])["docs"]
        return {d["_id"]: d["_source"].get("fingerprint", "") for d in found if d.get("found")}


def _noting(docs: Iterable[SearchDoc], sent: list[tuple[str, np.ndarray | None]]) -> Iterable[SearchDoc]:
    """`docs`, noting each one's id and fused vector in `sent` as it passes."""
    for doc in docs:
        sent.append((doc.id, doc.fused_vector))
        yield doc


def _staging(docs: Iterable[SearchDoc], staged, chunk: int) -> Iterable[SearchDoc]:
    """`docs`, added to the `staged` FAISS indexes a chunk at a time as they pass."""
    for batch in batches(docs, chunk):
        Neighbours.add(staged, [(doc.id, doc.fused_vector) for doc in batch])
        yield from batch


def _rrf_refused(error: ApiError) -> bool:
    """Whether the cluster refused the rrf retriever for its licence: 403 `security_exception` "current license
    is non-compliant for [Reciprocal Rank Fusion (RRF)]". Any other error (a bad request, a size over the rank
    window) is raised, never mistaken for a missing licence."""
    body = error.body if isinstance(error.body, dict) else {}
    cause = body.get("error") if isinstance(body.get("error"), dict) else {}
    reason = str(cause.get("reason", "")).lower()
    return error.status_code == 403 and "non-compliant" in reason and "reciprocal rank fusion" in reason


def _hit(hit: dict[str, Any], score: float | None = None) -> Hit:
    source = hit.get("_source", {})
    return Hit(
        id=hit["_id"],
        score=float(score if score is not None else hit.get("_score") or 0.0),
        title=source.get("title", ""),
        tags=source.get("tags", {}),
        description=source.get("description", ""),
        attributes=source.get("attributes", {}),
        numbers=source.get("numbers", {}),
        sort_values=tuple(hit.get("sort", ())),
    )


def _total(response: dict[str, Any]) -> int:
    return int(response["hits"]["total"]["value"])


def _relation(response: dict[str, Any]) -> str:
    """`eq` or `gte`, as the cluster counted: a lower bound is never reported as an exact total."""
    return str(response["hits"]["total"].get("relation", "eq"))


def _terms(aggs: dict[str, Any], name: str) -> list[tuple[str, int]]:
    """Buckets of a terms aggregation, most frequent first, ties by value (as the embedded store orders them)."""
    buckets = [(b["key"], int(b["doc_count"])) for b in aggs.get(name, {}).get("buckets", [])]
    return sorted(buckets, key=lambda b: (-b[1], b[0]))


def _results(response: dict[str, Any], query: SearchQuery) -> SearchResults:
    aggs = response.get("aggregations", {})
    ranges = {}
    for name, edges in query.range_facets.items():
        counts = {b["key"]: int(b["doc_count"]) for b in aggs.get(f"numbers.{name}", {}).get("buckets", [])}
        ranges[name] = [RangeBucket(key, low, high, counts.get(key, 0)) for key, low, high in range_buckets(edges)]
    return SearchResults(
        hits=[_hit(h) for h in response["hits"]["hits"]],
        total=_total(response),
        total_relation=_relation(response),
        facets={family: _terms(aggs, f"tags.{family}") for family in query.facets},
        attribute_facets={name: _terms(aggs, f"attributes.{name}") for name in query.attribute_facets},
        range_facets=ranges,
    )
