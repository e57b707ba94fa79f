"""Every request body the project sends to Elasticsearch is valid under the official OpenAPI spec, strictly:
a misspelt field fails. The stored search template renders to the same query the backend runs."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import re
from typing import Any

import chevron
import numpy as np
import pytest
from elastic_transport import Urllib3HttpNode
from elasticsearch.helpers import expand_action
from es_openapi import SPEC, ESRequestValidator
from fixtures_search import DIMS, NUMERIC, drop_alias, es_settings, topic_vector
from jsonschema.exceptions import ValidationError

from shoptag.indexer.documents import SearchQuery
from shoptag.indexer.es import search
from shoptag.indexer.es.backend import ESBackend
from shoptag.indexer.es.client import make_client
from shoptag.indexer.es.mapping import index_body, search_template
from shoptag.indexer.es.reindex import delete_actions, doc_source, index_actions, swap_actions, vector_value
from shoptag.indexer.search_common import VectorDims

pytestmark = pytest.mark.es

QUERIES = [
    SearchQuery(text="denim jeans", vector=topic_vector("denim"), filters={"color": ["blue", "red"], "gender": ["men"]},
                facets=("color", "category"), size=5, window=50, rank_constant=20),
    SearchQuery(text="牛仔", vector=topic_vector("denim")),
    SearchQuery(text="watch", facets=("color",)),
    SearchQuery(filters={"category": ["watch"]}, facets=("gender",)),
    SearchQuery(vector=topic_vector("watch"), filters={"color": ["black"]}),
    SearchQuery(text="jeans", vector=topic_vector("denim"), offset=20, size=10, ranges={"price": (10.0, None)},
                attributes={"brand": ["Lee", "Nike"]}, attribute_facets=("brand",),
                range_facets={"price": (50.0, 100.0)}, boosts={"gender": ["women"], "color": ["blue"]},
                vector_filters={"color": ["blue"]}),
    SearchQuery(text="手表", sort="price_desc", after=(899.0, "cn-watch"), ranges={"price": (None, 1000.0)}),
    SearchQuery(sort="newest", offset=5, filters={"gender": ["men"]}),
    SearchQuery(after=("en-jeans",)),
]


@pytest.fixture(scope="module")
def validator() -> ESRequestValidator:
    if not SPEC.is_file():
        pytest.skip(f"the Elasticsearch OpenAPI spec is not at {SPEC}")
    return ESRequestValidator()


def bulk_lines(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ndjson lines `helpers.streaming_bulk` sends for `actions` (action line, then source)."""
    lines = []
    for action in actions:
        meta, source = expand_action(copy.deepcopy(action))
        lines.append(meta)
        if source is not None:
            lines.append(source)
    return lines


def render_template(source: str, params: dict[str, Any]) -> dict[str, Any]:
    """Render a search template as Elasticsearch does, `{{#toJson}}` included (chevron calls it as a lambda)."""
    rendered = chevron.render(source, {**params, "toJson": lambda name, render: json.dumps(params[name.strip()])})
    return json.loads(rendered)


# ---- every body the builders make -------------------------------------------------------------------------------
@pytest.mark.parametrize("query", QUERIES, ids=range(len(QUERIES)))
def test_search_bodies_are_valid(validator, query):
    validator.validate("search", search.text_body(query))
    if query.vector is not None:
        validator.validate("search", search.knn_body(query))
        validator.validate("search", search.union_body(query, ["a", "b"]))
        validator.validate("search", search.similar_body(query.vector, 7, query.filters, "a"))
        if query.text:
            validator.validate("search", search.hybrid_body(query))
            validator.validate("search", render_template(search_template("v1"), search.template_params(query)))
            validator.validate("search", search.score_sum_body(query))
            basic = render_template(search_template("v1", rrf=False), search.template_params(query))
            assert basic == search.score_sum_body(query)
            validator.validate("search", basic)
    if query.sort_key is not None:
        validator.validate("search", search.sorted_body(query, ["a", "b"] if query.vector is not None else None))


@pytest.mark.parametrize("index_type", ["hnsw", "int8_hnsw", "int4_hnsw", "flat", "int8_flat", "bbq_hnsw", "bbq_flat"])
@pytest.mark.parametrize("dims", [VectorDims(384, None, 384), VectorDims(512, 512, 512)])
def test_index_bodies_are_valid(validator, index_type, dims):
    body = index_body("v1", dims, index_type)
    validator.validate("indices.create", body)
    vectors = {name: field for name, field in body["mappings"]["properties"].items() if name.endswith("_vector")}
    assert set(vectors) == {"text_vector"} | ({"image_vector", "fused_vector"} if dims.image else set())
    assert {(f["dims"], f["index_options"]["type"], f["similarity"]) for f in vectors.values()} == {
        (384 if dims.image is None else 512, index_type, "cosine")}


def test_write_and_alias_bodies_are_valid(validator, catalog_docs):
    validator.validate("put_script", search.template_script(search_template("v1")))
    validator.validate("indices.update_aliases", {"actions": swap_actions("shop", ["shop-v1-1", "shop-v1-2"], "shop-v1-3")})
    actions = [*index_actions(catalog_docs[:3], "shop-v1-3", "v1"), *delete_actions(["a", "b"], "shop")]
    validator.validate_bulk(bulk_lines(actions))


def test_documents_carry_what_detects_stale_vectors(catalog_docs):
    source = doc_source(catalog_docs[0], "v1", fused=False)
    assert {source[k] for k in ("content_hash", "text_model", "mapping_version")} == {"hash-cn-jeans", "test-encoder", "v1"}
    assert len(source["text_vector"]) == DIMS.text and "image_vector" not in source
    assert source["tag_details"][0] == {"family": "category", "value": "jeans", "score": 0.9, "source": "model"}
    mapping = index_body("v1", DIMS, "int8_hnsw")["mappings"]
    assert set(source) <= set(mapping["properties"])  # the index is `dynamic: strict`: every field is mapped


def test_vectors_go_as_float32_and_read_back_exactly(catalog_docs):
    vector = np.random.default_rng(1).normal(size=384).astype(np.float32)
    vector[:4] = [0.0, 1e-30, -1.0, 0.1]
    as_text, as_base64 = vector_value(vector), vector_value(vector, as_base64=True)
    assert np.array_equal(np.asarray(as_text, dtype=np.float32), vector)
    assert np.array_equal(np.frombuffer(base64.b64decode(as_base64), dtype=">f4"), vector)
    float64_text = len(json.dumps(vector.astype(np.float64).tolist()))
    assert len(json.dumps(as_text)) < 0.7 * float64_text and len(as_base64) < 0.3 * float64_text


def test_a_dynamic_template_with_a_match_condition_is_valid(validator):
    """The spec's `DynamicTemplate` once failed every template with a condition (its "exactly one of mapping /
    runtime" counted `match` too)."""
    body = index_body("v1", DIMS, "int8_hnsw")
    body["mappings"]["dynamic_templates"] = [
        {"tag_keywords": {"path_match": "tags.*", "match_mapping_type": "string", "mapping": {"type": "keyword"}}}]
    validator.validate("indices.create", body)
    both = copy.deepcopy(body)
    both["mappings"]["dynamic_templates"][0]["tag_keywords"]["runtime"] = {"type": "keyword"}
    neither = copy.deepcopy(body)
    del neither["mappings"]["dynamic_templates"][0]["tag_keywords"]["mapping"]
    misspelt = _misspell(body, ["mappings", "dynamic_templates", 0, "tag_keywords", "path_match"], "path_mtch")
    for wrong in (both, neither, misspelt):
        with pytest.raises(ValidationError):
            validator.validate("indices.create", wrong)


# ---- strictness: misspelt fields fail -----------------------------------------------------------------------------
def _misspell(body: dict[str, Any], path: list[Any], wrong: str) -> dict[str, Any]:
    """A copy of `body` with the key at `path` renamed to `wrong`."""
    body = copy.deepcopy(body)
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    parent[wrong] = parent.pop(path[-1])
    return body


HYBRID = search.hybrid_body(QUERIES[0])
MISSPELT = [
    ("search", HYBRID, ["retriever", "rrf", "rank_window_size"], "rank_windw_size"),
    ("search", HYBRID, ["retriever", "rrf", "retrievers", 1, "knn", "num_candidates"], "num_candidate"),
    ("search", HYBRID, ["retriever", "rrf", "retrievers", 0, "standard", "query", "bool", "filter"], "filters"),
    ("search", HYBRID, ["retriever", "rrf", "retrievers", 0, "standard", "query", "bool", "must", 0, "multi_match",
                        "fields"], "field"),
    ("search", HYBRID, ["aggregations", "tags.color", "terms", "field"], "feild"),
    ("search", HYBRID, ["aggregations"], "aggs"),  # Elasticsearch takes it, the spec does not: we send the spec's
    ("search", HYBRID, ["_source", "includes"], "include"),
    ("search", search.text_body(QUERIES[3]), ["track_total_hits"], "track_total_hit"),
    ("search", search.similar_body(np.ones(DIMS.fused), 3, {}, "x"), ["knn", "query_vector"], "query_vektor"),
    ("indices.create", index_body("v1", DIMS, "int8_hnsw"), ["mappings", "properties", "text_vector", "dims"], "dimz"),
    ("indices.create", index_body("v1", DIMS, "int8_hnsw"), ["mappings", "properties", "title", "analyzer"], "analyser"),
    ("indices.create", index_body("v1", DIMS, "int8_hnsw"),
     ["settings", "analysis", "analyzer", "shoptag_text", "tokenizer"], "tokeniser"),
    ("put_script", search.template_script("{}"), ["script", "source"], "sorce"),
    ("indices.update_aliases", {"actions": swap_actions("a", ["b"], "c")}, ["actions", 1, "add", "index"], "indx"),
]


@pytest.mark.parametrize(("operation", "body", "path", "wrong"), MISSPELT, ids=[m[3] for m in MISSPELT])
def test_a_misspelt_field_fails_validation(validator, operation, body, path, wrong):
    validator.validate(operation, body)
    with pytest.raises(ValidationError, match=wrong):
        validator.validate(operation, _misspell(body, path, wrong))


def test_a_misspelt_bulk_action_field_fails_validation(validator, catalog_docs):
    lines = bulk_lines(list(index_actions(catalog_docs[:2], "shop", "v1")))
    validator.validate_bulk(lines)
    with pytest.raises(ValidationError, match="_idd"):
        validator.validate_bulk([_misspell(lines[0], ["index", "_id"], "_idd"), *lines[1:]])
    with pytest.raises(ValidationError):
        validator.validate_bulk([{"indx": lines[0]["index"]}, lines[1]])


# ---- what the backend really sends ------------------------------------------------------------------------------
@pytest.fixture
def recorded(noida_server, catalog_docs):
    """Run every backend path on noida through a client that records each request it sends."""
    sent: list[tuple[str, str, bytes | None]] = []

    class RecordingNode(Urllib3HttpNode):
        def perform_request(self, method, target, body=None, headers=None, **kwargs):
            sent.append((method, target, body))
            return super().perform_request(method, target, body=body, headers=headers, **kwargs)

    results = {}
    for hybrid in ("auto", "client"):
        settings = es_settings(noida_server.url, hybrid=hybrid)
        backend = ESBackend(settings, DIMS, client=make_client(settings, node_class=RecordingNode), numeric=NUMERIC)
        try:
            backend.upsert(catalog_docs[:4])
            backend.reindex(catalog_docs)
            backend.reindex([dataclasses.replace(catalog_docs[0], title="changed"), *catalog_docs[1:]], incremental=True)
            bad = dataclasses.replace(catalog_docs[0], text_vector=np.ones(3, dtype=np.float32))
            backend.reindex([bad, *catalog_docs[1:]])
            results[hybrid] = [backend.search(query) for query in QUERIES]
            backend.similar("cn-watch", k=3, filters={"color": ["black"]})
            backend.delete(["en-tee", "unknown"])
            backend.count()
        finally:
            backend.close()
            drop_alias(settings)
    return sent, results


def test_every_request_the_backend_sends_is_valid(validator, recorded):
    sent, _ = recorded
    operations = {re.sub(r"-\d+$", "", validator.validate_request(method, target, body)) for method, target, body in sent}
    assert {"indices-create", "put-script", "bulk", "indices-update-aliases", "search", "mget", "indices-delete",
            "count", "indices-put-index-template", "indices-put-settings", "index", "delete"} <= operations


def test_client_side_fusion_ranks_like_the_rrf_retriever(recorded):
    _, results = recorded
    for rrf, here in zip(results["auto"], results["client"]):
        assert [h.id for h in here.hits] == [h.id for h in rrf.hits]
        assert (here.total, here.facets) == (rrf.total, rrf.facets)


def test_rendered_template_is_the_hybrid_query_and_finds_the_same_hits(noida_server, catalog_docs):
    settings = es_settings(noida_server.url)
    backend = ESBackend(settings, DIMS, numeric=NUMERIC)
    try:
        backend.reindex(catalog_docs)
        stored = backend._client.get_script(id=search.template_id(settings.index_alias, "v1"))["script"]
        assert stored["lang"] == "mustache"
        for query in (QUERIES[0], QUERIES[1], dataclasses.replace(QUERIES[1], text='quote " and \\ back')):
            rendered = render_template(stored["source"], search.template_params(query))
            assert rendered == search.hybrid_body(query)
            direct = backend._client.search(index=settings.index_alias, body=search.hybrid_body(query))
            via_template = backend._client.search(index=settings.index_alias, body=rendered)
            assert [h["_id"] for h in via_template["hits"]["hits"]] == [h["_id"] for h in direct["hits"]["hits"]]
            assert [h.id for h in backend.search(query).hits] == [h["_id"] for h in direct["hits"]["hits"]]
    finally:
        backend.close()
        drop_alias(settings)
