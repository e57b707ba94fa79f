"""`similar` on Elasticsearch comes from FAISS beside the cluster (the design: recommendations are looked up in
FAISS), kept in step by the backend's upserts, deletes and full reindexes; Elasticsearch kNN answers for a
product FAISS does not hold, asking for the vectors a 9.2+ server leaves out of `_source`. A known product
with neighbours never gets []. Servers are noida-db behind `es_proxy.ESProxy` answering as 9.2."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest
from es_proxy import ESProxy, Persona
from fixtures_search import DIMS, drop_alias, es_settings, topic_vector

from shoptag.core.settings import load_settings
from shoptag.indexer.backends import neighbours_folder, open_backend
from shoptag.indexer.es.backend import ESBackend
from shoptag.indexer.neighbours import Neighbours

pytestmark = pytest.mark.es


@pytest.fixture
def proxy(noida_server) -> Iterator[ESProxy]:
    """noida-db answering as Elasticsearch 9.2: vectors are left out of returned `_source`."""
    started = ESProxy(noida_server.url, Persona(version="9.2.1"))
    yield started
    started.close()


@pytest.fixture
def settings(proxy):
    made = es_settings(proxy.url)
    yield made
    drop_alias(made)


def ids(hits) -> set[str]:
    return {hit.id for hit in hits}


def searches(proxy: ESProxy) -> list[dict]:
    return [json.loads(r.body) for r in proxy.received if r.path.split("?")[0].endswith("/_search") and r.body]


def test_similar_comes_from_faiss_and_follows_every_write(proxy, settings, catalog_docs, tmp_path):
    backend = ESBackend(settings, DIMS, neighbours=Neighbours(tmp_path / "faiss", DIMS))
    try:
        assert backend.reindex(catalog_docs).ok
        proxy.received.clear()
        assert ids(backend.similar("cn-watch", k=2)) == {"cn-smartwatch", "en-watch"}
        assert ids(backend.similar("cn-watch", k=1, filters={"color": ["brown"]})) == {"en-watch"}
        # FAISS ranked: the cluster was only asked for the documents, never for a kNN search or a vector
        assert searches(proxy) and all("knn" not in body and "exclude_vectors" not in json.dumps(body)
                                       for body in searches(proxy))
        backend.delete(["en-watch"])
        assert "en-watch" not in ids(backend.similar("cn-watch", k=5))
        twin = dataclasses.replace(catalog_docs[1], id="cn-watch-2", title="男士石英手表 新款")
        assert backend.upsert([twin]).ok
        assert "cn-watch-2" in ids(backend.similar("cn-watch", k=2))
        # another process on the same workspace (the service beside a CLI reindex) sees the same index
        other = ESBackend(settings, DIMS, neighbours=Neighbours(tmp_path / "faiss", DIMS))
        try:
            assert ids(other.similar("cn-watch", k=2)) == ids(backend.similar("cn-watch", k=2))
        finally:
            other.close()
    finally:
        backend.close()


def test_a_failed_full_reindex_leaves_faiss_as_the_live_index_is(settings, catalog_docs, tmp_path):
    backend = ESBackend(settings, DIMS, neighbours=Neighbours(tmp_path / "faiss", DIMS))
    try:
        assert backend.reindex(catalog_docs).ok
        before = [h.id for h in backend.similar("en-jeans", k=5)]
        moved = [dataclasses.replace(d, fused_vector=topic_vector("snack")) for d in catalog_docs[:6]]
        broken = dataclasses.replace(catalog_docs[6], text_vector=topic_vector("watch")[:4])  # rejected
        assert not backend.reindex([*moved, broken]).ok
        assert [h.id for h in backend.similar("en-jeans", k=5)] == before
    finally:
        backend.close()


def test_a_product_faiss_lacks_is_answered_by_knn_with_the_vectors_asked_for(proxy, settings, catalog_docs, tmp_path):
    filled_elsewhere = ESBackend(settings, DIMS)  # e.g. an index built from another workspace
    try:
        assert filled_elsewhere.reindex(catalog_docs).ok
    finally:
        filled_elsewhere.close()
    backend = ESBackend(settings, DIMS, neighbours=Neighbours(tmp_path / "empty", DIMS))
    try:
        proxy.received.clear()
        assert ids(backend.similar("cn-watch", k=2)) == {"cn-smartwatch", "en-watch"}
        assert any(body.get("_source", {}).get("exclude_vectors") is False for body in searches(proxy))
        assert len(backend.vectors(["cn-watch", "en-watch"])) == 2
    finally:
        backend.close()


def test_settings_choose_faiss_or_knn(proxy, tmp_path):
    base = load_settings(workspace=tmp_path / "ws", es={"url": proxy.url, "index_alias": "similar-choice"})
    faiss = open_backend(base, DIMS)
    knn = open_backend(base.model_copy(update={"es": base.es.model_copy(update={"similar": "knn"})}), DIMS)
    try:
        assert faiss.neighbours is not None and faiss.neighbours.directory == neighbours_folder(base)
        assert neighbours_folder(base).is_relative_to(tmp_path / "ws")
        assert knn.neighbours is None
    finally:
        faiss.close()
        knn.close()
