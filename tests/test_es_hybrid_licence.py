"""Hybrid search on clusters whose licence has no `rrf` retriever (Basic), through a proxy in front of noida-db
that answers as such a cluster does: the choice comes from the licence (or, when the licence cannot be read,
from the cluster's specific licence error, once, logged), other errors are never mistaken for it, and the
stored search template has the same fallback."""

from __future__ import annotations

import logging

import pytest
from es_proxy import ESProxy, Persona
from fixtures_search import DIMS, drop_alias, es_settings, topic_vector
from test_es_requests import render_template

from shoptag.indexer.documents import SearchQuery
from shoptag.indexer.es import search
from shoptag.indexer.es.backend import ESBackend

pytestmark = pytest.mark.es
QUERY = SearchQuery(text="denim", vector=topic_vector("denim"), facets=("color",), size=5, window=20,
                    vector_filters={"category": ["jeans"]})  # the kNN half filtered apart from the text half


@pytest.fixture
def cluster(noida_server, catalog_docs):
    """(proxy, backend) for a persona, the catalog indexed; closed and dropped after."""
    opened: list[tuple[ESProxy, ESBackend]] = []

    def start(**persona: object) -> tuple[ESProxy, ESBackend]:
        proxy = ESProxy(noida_server.url, Persona(**persona))
        backend = ESBackend(es_settings(proxy.url), DIMS)
        assert backend.reindex(catalog_docs).ok
        opened.append((proxy, backend))
        return proxy, backend

    yield start
    for proxy, backend in opened:
        backend.close()
        drop_alias(backend.settings)
        proxy.close()


def rrf_requests(proxy: ESProxy) -> int:
    return sum(1 for r in proxy.received if r.path.split("?")[0].endswith("/_search") and b'"rrf"' in r.body)


def test_a_basic_licence_fuses_on_the_client_without_trying_rrf(cluster, noida_server):
    _, enterprise = cluster(licence="enterprise")
    proxy, basic = cluster(licence="basic")
    assert basic.server.rrf is False and enterprise.server.rrf is True
    here, there = basic.search(QUERY), enterprise.search(QUERY)
    assert [h.id for h in here.hits] == [h.id for h in there.hits] and here.hits[0].id == "en-jeans"
    assert (here.total, here.facets) == (there.total, there.facets)
    assert rrf_requests(proxy) == 0  # decided from the licence, not by trial


def test_an_unknown_licence_falls_back_once_on_the_licence_error_and_says_so(cluster, caplog):
    proxy, backend = cluster(licence="basic", licence_api=False)
    assert backend.server.rrf is None
    caplog.set_level(logging.WARNING, logger="shoptag.es")
    first, second = backend.search(QUERY), backend.search(QUERY)
    assert [h.id for h in first.hits] == [h.id for h in second.hits] and first.hits[0].id == "en-jeans"
    assert rrf_requests(proxy) == 1
    (warning,) = [r for r in caplog.records if r.name == "shoptag.es"]
    assert "Reciprocal Rank Fusion" in warning.getMessage() and "fuses BM25 and kNN here" in warning.getMessage()


def test_other_errors_are_not_taken_for_a_missing_licence(cluster):
    proxy, backend = cluster(licence="enterprise")
    big = SearchQuery(text="denim", vector=topic_vector("denim"), size=30, window=5)  # size over the window
    assert [h.id for h in backend.search(big).hits][0] == "en-jeans"
    assert search.hybrid_body(big)["retriever"]["rrf"]["rank_window_size"] >= 30
    assert backend._rrf  # still on rrf


def test_the_stored_template_has_the_same_fallback(cluster, catalog_docs):
    for licence, key in (("enterprise", "retriever"), ("basic", "knn")):
        _, backend = cluster(licence=licence)
        stored = backend._client.get_script(id=search.template_id(backend.alias, "v1"))["script"]["source"]
        rendered = render_template(stored, search.template_params(QUERY))
        assert key in rendered and ("retriever" in rendered) == (licence == "enterprise")
        expected = search.hybrid_body(QUERY) if licence == "enterprise" else search.score_sum_body(QUERY)
        assert rendered == expected
        # what the storefront's call runs, through the cluster (a Basic one refuses it if it held a retriever)
        answer = backend._client.search(index=backend.alias, body=rendered)
        assert answer["hits"]["hits"][0]["_id"] == "en-jeans"


def test_a_total_the_cluster_stopped_counting_is_reported_as_a_lower_bound(cluster):
    _, backend = cluster(licence="enterprise", total_cap=3)
    results = backend.search(SearchQuery(text="denim", vector=topic_vector("denim"), size=2, window=20))
    assert (results.total, results.total_relation) == (3, "gte")
    exact = backend.search(SearchQuery(text="watch"))  # text-only searches count exactly
    assert exact.total_relation == "eq"
