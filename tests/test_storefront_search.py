"""Storefront search on every backend (embedded, noida-db with rrf and with client-side fusion): paging and cursors,
sorting, numeric ranges and range facets, keyword attributes, highlighting, query-tag boosts and diversity; and
every bad request refused with one `BadInput` before anything is sent."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fixtures_search import BRANDS, DIMS, NUMERIC, PRICES, drop_alias, es_settings, topic_vector

from shoptag.core.errors import BadInput
from shoptag.indexer import storefront
from shoptag.indexer.diversity import capped_order, mmr_order
from shoptag.indexer.documents import MISSING_LAST, Diversity, SearchQuery
from shoptag.indexer.es.backend import ESBackend
from shoptag.indexer.es.client import make_client
from shoptag.indexer.paging import Known, Limits

pytestmark = pytest.mark.es

LIMITS = Limits(max_size=20, max_window=30)
KNOWN = Known(numeric=frozenset(NUMERIC), attributes=frozenset({"brand"}))


def run(backend, query: SearchQuery, cursor: str | None = None):
    return storefront.search(backend, query, LIMITS, KNOWN, cursor)


def ids(results) -> list[str]:
    return [hit.id for hit in getattr(results, "hits", results)]


def walk(backend, query: SearchQuery) -> list[str]:
    """Every hit of `query`, page by page through the cursors."""
    seen, cursor = [], None
    for _ in range(50):
        results = run(backend, query, cursor)
        assert results.hits or not seen, "a cursor led to an empty page"
        seen += ids(results)
        cursor = results.cursor
        if cursor is None:
            return seen
    raise AssertionError("cursor paging did not end")


@pytest.fixture
def shop(search_backend, catalog_docs):
    popular = {d.id: float(i % 4) for i, d in enumerate(catalog_docs[:8])}  # ties, and four without any
    docs = [dataclasses.replace(d, popularity=popular.get(d.id)) for d in catalog_docs]
    assert search_backend.upsert(docs).ok
    return search_backend, docs


def expected_order(docs, key, descending: bool) -> list[str]:
    """Sort key order with missing values last, ties by id."""
    def sort_key(doc):
        value = key(doc)
        missing = value is None
        return (missing, -(value or 0) if descending else (value or 0), doc.id)
    return [d.id for d in sorted(docs, key=sort_key)]


@pytest.mark.parametrize(("sort", "key", "descending"), [
    ("price_asc", lambda d: PRICES.get(d.id), False),
    ("price_desc", lambda d: PRICES.get(d.id), True),
    ("newest", lambda d: d.listed_at, True),
    ("popularity", lambda d: d.popularity, True),
])
def test_field_sorts_page_by_cursor_without_gaps_or_repeats_under_ties(shop, sort, key, descending):
    backend, docs = shop
    walked = walk(backend, SearchQuery(sort=sort, size=3))
    assert walked == expected_order(docs, key, descending)
    first = run(backend, SearchQuery(sort=sort, size=3))
    assert first.total == len(docs) and first.hits[0].sort_values[-1] == walked[0]
    # a full last page says there is no next one (not a cursor to an empty page)
    assert run(backend, SearchQuery(sort=sort, size=len(docs))).cursor is None
    last = run(backend, SearchQuery(sort=sort, size=len(docs) - 2))
    assert run(backend, SearchQuery(sort=sort, size=len(docs) - 2), last.cursor).cursor is None


def test_price_sort_of_a_text_query_orders_its_matches(shop):
    backend, _ = shop
    assert ids(run(backend, SearchQuery(text="手表", sort="price_asc"))) == ["cn-smartwatch", "cn-watch"]  # tie: id
    hybrid = run(backend, SearchQuery(text="denim", vector=topic_vector("denim"), sort="price_desc", size=20))
    prices = [h.numbers.get("price", -MISSING_LAST) for h in hybrid.hits]
    assert prices == sorted(prices, reverse=True) and len(hybrid.hits) == hybrid.total


def test_from_and_size_pages_concatenate_to_the_ranking(shop):
    backend, docs = shop
    whole = ids(run(backend, SearchQuery(text="denim", vector=topic_vector("denim"), size=12)))
    pages = [ids(run(backend, SearchQuery(text="denim", vector=topic_vector("denim"), size=5, offset=o)))
             for o in (0, 5, 10)]
    assert sum(pages, []) == whole and len(set(whole)) == len(docs)
    assert walk(backend, SearchQuery(text="denim", vector=topic_vector("denim"), size=5)) == whole
    browse = [ids(run(backend, SearchQuery(size=4, offset=o))) for o in (0, 4, 8)]
    assert sum(browse, []) == sorted(d.id for d in docs)
    assert walk(backend, SearchQuery(size=5)) == sorted(d.id for d in docs)


def test_price_ranges_and_range_facets(shop):
    backend, docs = shop
    cheap = run(backend, SearchQuery(ranges={"price": (50.0, 160.0)}, size=20,
                                     range_facets={"price": (60.0, 200.0)}))
    assert set(ids(cheap)) == {pid for pid, p in PRICES.items() if 50 <= p <= 160}
    assert [(b.key, b.count) for b in cheap.range_facets["price"]] == [("*-60", 2), ("60-200", 3), ("200-*", 0)]
    assert set(ids(run(backend, SearchQuery(ranges={"price": (None, 59.5)}, size=20)))) == {"cn-gloves", "en-jeans",
                                                                                           "en-dress", "en-tee"}
    everything = run(backend, SearchQuery(range_facets={"price": (100.0,)}))
    assert [(b.key, b.low, b.high, b.count) for b in everything.range_facets["price"]] == [
        ("*-100", None, 100.0, 5), ("100-*", 100.0, None, 5)]  # two products have no price
    text = run(backend, SearchQuery(text="手表", ranges={"price": (0.0, 1000.0)}, range_facets={"price": (500.0,)}))
    assert set(ids(text)) == {"cn-watch", "cn-smartwatch"} and text.range_facets["price"][1].count == 2
    assert run(backend, SearchQuery(text="手表")).hits[0].numbers == {"price": 899.0}


def test_keyword_attributes_filter_and_facet(shop):
    backend, _ = shop
    nike = run(backend, SearchQuery(attributes={"brand": ["Nike"]}, size=20, attribute_facets=("brand",)))
    assert set(ids(nike)) == {pid for pid, b in BRANDS.items() if b == "Nike"}
    assert nike.attribute_facets == {"brand": [("Nike", 3)]}
    both = run(backend, SearchQuery(attributes={"brand": ["Nike", "Lee"]}, filters={"gender": ["women"]}, size=20))
    assert set(ids(both)) == {"cn-jeans", "en-shoes", "en-hoodie"}
    counts = run(backend, SearchQuery(attribute_facets=("brand",))).attribute_facets["brand"]
    assert counts == [("Nike", 3), ("Casio", 2), ("Lee", 2), ("Huawei", 1)]
    assert run(backend, SearchQuery(text="jeans", size=1)).hits[0].attributes == {"brand": "Lee"}


def test_highlights_mark_matched_words_in_chinese_and_english(shop):
    backend, _ = shop
    (hit,) = run(backend, SearchQuery(text="连衣裙", highlight=True)).hits
    assert hit.highlights == {"title": "夏季碎花<em>连衣裙</em>"}
    hits = run(backend, SearchQuery(text="running shoe", highlight=True)).hits
    assert hits[0].highlights["title"] == "Lightweight <em>Running</em> <em>Shoes</em>"
    watch = {h.id: h.highlights for h in run(backend, SearchQuery(text="手表 防水", highlight=True)).hits}
    assert watch["cn-watch"]["title"] == "男士石英<em>手表</em> <em>防水</em>"
    assert run(backend, SearchQuery(text="连衣裙")).hits[0].highlights == {}  # only when asked


def test_query_tag_boosts_reorder_text_matches(shop):
    backend, _ = shop
    for gender, first in (("women", "cn-smartwatch"), ("men", "cn-watch")):
        results = run(backend, SearchQuery(text="手表", boosts={"gender": [gender]}, boost_weight=5.0))
        assert ids(results)[0] == first and results.total == 2
    hybrid = run(backend, SearchQuery(text="denim", vector=topic_vector("denim"), boosts={"category": ["dress"]},
                                      boost_weight=5.0, size=3))
    assert ids(hybrid)[0] == "en-jeans"  # a boost only raises text matches; no dress says "denim"


def test_named_query_tags_rank_their_products_first_in_the_vector_half(shop):
    backend, docs = shop
    category = {d.id: d.tags["category"][0].value for d in docs}
    # a watch-like vector with the query naming "dress": the dresses come first (they are in both kNN lists),
    # the watch-like neighbours after them, not left out (a product whose tags are not in yet still comes)
    vector_only = run(backend, SearchQuery(vector=topic_vector("watch"), vector_filters={"category": ["dress"]},
                                           size=20))
    found = [category[i] for i in ids(vector_only)]
    assert found[:2] == ["dress", "dress"] and "watch" in found[2:]
    plain = run(backend, SearchQuery(vector=topic_vector("watch"), size=20))
    assert [category[i] for i in ids(plain)][:3] == ["watch"] * 3 and vector_only.total == plain.total
    # with text: both jeans (text matches) and the dresses rank above every watch
    hybrid = run(backend, SearchQuery(text="denim jeans 牛仔裤", vector=topic_vector("watch"), size=20,
                                      vector_filters={"category": ["dress"]}))
    order = [category[i] for i in ids(hybrid)]
    assert {"en-jeans", "cn-jeans"} <= set(ids(hybrid)[:4]) and set(order[:4]) == {"jeans", "dress"}
    assert max(i for i, c in enumerate(order) if c in ("jeans", "dress")) < order.index("watch")
    # the shop's own filter decides its family: no dress passes category=watch, so only the filter holds
    filtered = run(backend, SearchQuery(vector=topic_vector("watch"), vector_filters={"category": ["dress"]},
                                        filters={"category": ["watch"]}))
    assert {category[i] for i in ids(filtered)} == {"watch"}


def test_diversity_cap_keeps_one_per_category_on_a_page(shop):
    backend, _ = shop
    query = SearchQuery(text="watch 手表 denim", vector=topic_vector("watch"), size=4)
    plain = run(backend, query)
    capped = run(backend, dataclasses.replace(query, diversity=Diversity("cap", family="category", max_per_value=1)))
    categories = [h.tags["category"][0] for h in capped.hits]
    assert len(set(categories)) == len(categories) == 4
    assert [h.tags["category"][0] for h in plain.hits].count("watch") >= 2
    second = run(backend, dataclasses.replace(query, diversity=Diversity("cap", family="category", max_per_value=1)),
                 capped.cursor)
    assert not set(ids(second)) & set(ids(capped))


def test_diversity_mmr_in_similar(shop):
    backend, _ = shop
    plain = ids(storefront.similar(backend, "cn-watch", 3, None))
    diverse = ids(storefront.similar(backend, "cn-watch", 3, None, Diversity("mmr", lambda_=0.3)))
    assert plain[:2] == ["cn-smartwatch", "en-watch"] or set(plain[:2]) == {"cn-smartwatch", "en-watch"}
    assert diverse[0] == plain[0] and len(set(diverse)) == 3
    assert sum(pid in ("cn-smartwatch", "en-watch") for pid in diverse) < 2  # the second watch made way


def test_cursor_from_another_index_version_or_query_is_refused(shop):
    backend, docs = shop
    first = run(backend, SearchQuery(sort="price_asc", size=3))
    assert ids(run(backend, SearchQuery(sort="price_asc", size=3), first.cursor))  # valid now
    with pytest.raises(BadInput, match="another query"):
        run(backend, SearchQuery(sort="price_desc", size=3), first.cursor)
    with pytest.raises(BadInput, match="damaged"):
        run(backend, SearchQuery(sort="price_asc", size=3), first.cursor[:-4] + "AAAA")
    assert backend.reindex(docs).ok
    with pytest.raises(BadInput, match="another version"):
        run(backend, SearchQuery(sort="price_asc", size=3), first.cursor)


BAD = [
    (SearchQuery(size=0), "size must be between"),
    (SearchQuery(size=10_000), "size must be between"),
    (SearchQuery(offset=-1), "from must be 0 or more"),
    (SearchQuery(offset=25, size=10), "from \\+ size must be at most 30"),
    (SearchQuery(sort="cheapest"), "unknown sort 'cheapest'"),
    (SearchQuery(ranges={"price": (100.0, 10.0)}), "min 100 is above max 10"),
    (SearchQuery(ranges={"price": (float("nan"), 10.0)}), "finite"),
    (SearchQuery(ranges={"weight": (1.0, 2.0)}), "'weight': not a numeric attribute"),
    (SearchQuery(range_facets={"price": (50.0, 10.0)}), "strictly ascending"),
    (SearchQuery(attributes={"colour": ["red"]}), "unknown attribute 'colour'"),
    (SearchQuery(attribute_facets=("material",)), "unknown attribute 'material'"),
    (SearchQuery(diversity=Diversity("mmr")), "needs a text query"),
    (SearchQuery(text="x", diversity=Diversity("cap", family="")), "needs a tag family"),
]


@pytest.mark.parametrize(("query", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_requests_are_refused_before_anything_is_sent(noida_server, query, message):
    """On Elasticsearch through a client that records every request: a bad query sends nothing at all."""
    sent = []

    from elastic_transport import Urllib3HttpNode

    class RecordingNode(Urllib3HttpNode):
        def perform_request(self, method, target, body=None, headers=None, **kwargs):
            sent.append((method, target))
            return super().perform_request(method, target, body=body, headers=headers, **kwargs)

    settings = es_settings(noida_server.url)
    backend = ESBackend(settings, DIMS, client=make_client(settings, node_class=RecordingNode), numeric=NUMERIC)
    try:
        with pytest.raises(BadInput, match=message):
            run(backend, query)
        with pytest.raises(BadInput, match="damaged"):
            run(backend, SearchQuery(sort="price_asc"), "not-a-cursor")
        assert [s for s in sent if "_search" in s[1]] == []
    finally:
        backend.close()
        drop_alias(settings)


# ---- the re-ranks as pure functions ---------------------------------------------------------------------------------
def test_mmr_prefers_novel_products_and_keeps_the_best_first():
    vectors = np.array([[1, 0], [1, 0.01], [0, 1], [0.99, 0.02]], dtype=np.float32)
    assert mmr_order(vectors, lambda_=1.0) == [0, 1, 2, 3]  # lambda 1: relevance only
    assert mmr_order(vectors, lambda_=0.5) == [0, 2, 1, 3]
    assert mmr_order(np.zeros((3, 2)), lambda_=0.5) == [0, 1, 2]  # no vectors: rank order


def test_cap_moves_the_surplus_down_and_stays_a_permutation():
    values = [["a"], ["a"], ["a"], ["b"], [], ["b"], ["a"]]
    order = capped_order(values, max_per_value=1, block=3)
    assert order[:3] == [0, 3, 4] and sorted(order) == list(range(len(values)))
    assert capped_order([["a"]] * 4, max_per_value=1, block=2) == [0, 1, 2, 3]  # nothing else to show


def test_the_similarity_cutoff_is_the_text_encoders_unless_set(tmp_path):
    from shoptag.core.settings import load_settings
    from shoptag.pipeline.search import NEIGHBOUR_COSINE, min_similarity

    def cutoff(**changes):
        return min_similarity(load_settings(workspace=tmp_path, **changes))

    assert cutoff() == NEIGHBOUR_COSINE["minilm"]
    assert cutoff(encoders={"text_model": "use-multilingual"}) == NEIGHBOUR_COSINE["use-multilingual"]
    assert cutoff(encoders={"text_model": "e5-small"}) is None  # no measured cutoff: the whole window
    assert cutoff(search={"min_similarity": 0.5}) == 0.5 and cutoff(search={"min_similarity": None}) is None
