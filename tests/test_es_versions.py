"""Every supported server version gets the headers it accepts and the features it has; unsupported servers
(7.x, 8.0-8.14, OpenSearch, a future major) are refused with one line naming what is supported. Servers are
noida-db behind `es_proxy.ESProxy`, which answers as each version does."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from es_proxy import COMPAT, ESProxy, Persona
from fixtures_search import DIMS, drop_alias, es_settings, topic_vector

from shoptag.core.errors import BackendUnavailable, BadInput
from shoptag.indexer.documents import SearchQuery
from shoptag.indexer.es.backend import ESBackend
from shoptag.indexer.es.server import Server

pytestmark = pytest.mark.es
SUPPORTED = ["8.15.0", "8.19.4", "9.0.3", "9.2.1", "9.3.0"]


@pytest.fixture
def proxy_for(noida_server) -> Iterator[Callable[..., ESProxy]]:
    """Start proxies in front of the session's noida-db, answering as the given persona."""
    proxies: list[ESProxy] = []

    def start(**persona: object) -> ESProxy:
        proxies.append(ESProxy(noida_server.url, Persona(**persona)))
        return proxies[-1]

    yield start
    for proxy in proxies:
        proxy.close()


def test_an_8x_server_refuses_the_9x_clients_header(proxy_for):
    """What the 9.x client sends unpinned, and what an 8.x server answers (the defect)."""
    proxy = proxy_for(version="8.17.0")
    answer = httpx.post(f"{proxy.url}/_search", content=b"{}", headers={
        "accept": "application/vnd.elasticsearch+json; compatible-with=9",
        "content-type": "application/vnd.elasticsearch+json; compatible-with=9"})
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "media_type_header_exception"
    assert "must be either version 8 or 7, but found 9" in answer.json()["error"]["caused_by"]["reason"]


@pytest.mark.parametrize("version", SUPPORTED)
def test_each_supported_version_gets_its_own_compatibility_header(proxy_for, catalog_docs, version):
    proxy = proxy_for(version=version)
    settings = es_settings(proxy.url)
    backend = ESBackend(settings, DIMS)
    try:
        assert backend.server.version == tuple(int(p) for p in version.split("."))
        assert backend.reindex(catalog_docs).ok
        assert backend.count() == len(catalog_docs)
        assert [h.id for h in backend.search(SearchQuery(text="连衣裙")).hits] == ["cn-dress"]
        assert backend.search(SearchQuery(text="denim", vector=topic_vector("denim"))).hits[0].id == "en-jeans"
        # 9.2+ leaves vectors out of _source: similar must ask for them, never answer [] for a known product
        assert {h.id for h in backend.similar("cn-watch", k=2)} == {"cn-smartwatch", "en-watch"}
    finally:
        backend.close()
        sent = list(proxy.received)
        drop_alias(settings)
    probe, *rest = sent
    bulk = b"".join(r.body for r in rest if r.path.split("?")[0].endswith("/_bulk"))
    assert (b'"text_vector": "' in bulk or b'"text_vector":"' in bulk) == (version >= "9.3")  # base64 from 9.3
    assert b"fused_vector" not in bulk  # text-only: the fused vector is the text vector, sent once
    assert (probe.method, probe.path) == ("GET", "/") and "compatible-with" not in probe.headers.get("accept", "")
    major = version.split(".")[0]
    for request in rest:
        for header in ("accept", "content-type"):
            if header in request.headers and (header == "accept" or request.body):
                assert COMPAT.search(request.headers[header])[1] == major, (request.path, request.headers)


@pytest.mark.parametrize(("persona", "named"), [
    ({"version": "7.17.25"}, "Elasticsearch 7.17.25"),
    ({"version": "8.14.3"}, "Elasticsearch 8.14.3"),
    ({"version": "10.0.0"}, "Elasticsearch 10.0.0"),
    ({"version": "2.17.1", "distribution": "opensearch"}, "OpenSearch 2.17.1"),
], ids=["7.x", "8.14", "10.x", "opensearch"])
def test_unsupported_servers_are_refused_in_one_line(proxy_for, persona, named):
    proxy = proxy_for(**persona)
    with pytest.raises(BackendUnavailable) as caught:
        ESBackend(es_settings(proxy.url), DIMS)
    message = str(caught.value)
    assert "\n" not in message and named in message
    assert "supports Elasticsearch 8.15 or later (8.x) or 9.x" in message
    assert [r.path for r in proxy.received] == ["/"]  # nothing else was sent


def test_features_follow_the_server_version():
    assert not Server((8, 15, 3)).bbq and Server((8, 16, 0)).bbq
    assert not Server((8, 17, 0)).linear_retriever and Server((8, 18, 0)).linear_retriever
    assert not Server((9, 1, 0)).excludes_vectors and Server((9, 2, 0)).excludes_vectors
    assert not Server((9, 2, 0)).base64_vectors and Server((9, 3, 0)).base64_vectors
    assert Server((9, 0, 0), serverless=True).base64_vectors


def test_bbq_index_options_need_a_server_that_has_them(proxy_for):
    proxy = proxy_for(version="8.15.3")
    with pytest.raises(BadInput, match="bbq_hnsw needs Elasticsearch 8.16 or later; the server is Elasticsearch 8.15.3"):
        ESBackend(es_settings(proxy.url, vector_index_type="bbq_hnsw"), DIMS)
