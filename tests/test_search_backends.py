"""One set of assertions for every search backend: embedded (SQLite FTS5 + FAISS), a real noida-db process
(with the rrf retriever and with client-side fusion), and a real cluster when SHOPTAG_TEST_ES_URL is set."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
from fixtures_search import DIMS, topic_vector

from shoptag.core.errors import NotFound
from shoptag.indexer.documents import DocTag, SearchDoc, SearchQuery

pytestmark = pytest.mark.es


def ids(results) -> list[str]:
    return [hit.id for hit in getattr(results, "hits", results)]


@pytest.fixture
def loaded(search_backend, catalog_docs):
    report = search_backend.upsert(catalog_docs)
    assert report.ok and report.written == len(catalog_docs)
    return search_backend


def test_upsert_counts_and_empty_index_answers(search_backend, catalog_docs):
    empty = search_backend.search(SearchQuery(text="jeans", facets=("color",)))
    assert (empty.hits, empty.total, empty.facets) == ([], 0, {"color": []})
    assert search_backend.count() == 0
    search_backend.upsert(catalog_docs)
    assert search_backend.count() == len(catalog_docs)
    search_backend.upsert(catalog_docs[:3])  # an upsert of known ids replaces, never duplicates
    assert search_backend.count() == len(catalog_docs)


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("running shoes", {"en-shoes"}),
        ("denim jeans", {"en-jeans"}),
        ("watch", {"en-watch"}),
        ("floral dress", {"en-dress"}),
        ("hoodie", {"en-hoodie"}),
    ],
)
def test_english_queries_find_expected_products_first(loaded, text, first):
    found = ids(loaded.search(SearchQuery(text=text)))
    assert set(found[: len(first)]) == first


@pytest.mark.parametrize(
    ("text", "first", "never"),
    [
        ("牛仔", {"cn-jeans"}, {"cn-jerky"}),  # 牛仔 finds 牛仔裤, not 牛肉干
        ("手表", {"cn-watch", "cn-smartwatch"}, {"cn-gloves"}),  # 手表 finds both watches, not 手套
        ("连衣裙", {"cn-dress"}, set()),
        ("牛仔裤", {"cn-jeans"}, {"cn-jerky"}),
    ],
)
def test_chinese_two_character_queries_match_inside_longer_words(loaded, text, first, never):
    results = loaded.search(SearchQuery(text=text))
    assert set(ids(results)[: len(first)]) == first
    assert not never & set(ids(results))
    assert results.total == len(first)


def test_hits_carry_title_and_tags(loaded):
    (hit,) = loaded.search(SearchQuery(text="连衣裙")).hits
    assert hit.title == "夏季碎花连衣裙"
    assert {family: set(values) for family, values in hit.tags.items()} == {
        "category": {"dress"}, "color": {"red"}, "gender": {"women"}}


def test_tag_filters_or_within_a_family_and_across_families(loaded, catalog_docs):
    def expected(filters):
        return {d.id for d in catalog_docs
                if all(any(t.value in values for t in d.tags.get(f, [])) for f, values in filters.items())}

    for filters in ({"color": ["blue"]}, {"color": ["blue", "red"]}, {"color": ["blue", "red"], "gender": ["women"]},
                    {"color": ["purple"]}):
        results = loaded.search(SearchQuery(filters=filters, size=50))
        assert set(ids(results)) == expected(filters) and results.total == len(expected(filters))
    # filters narrow text matches too
    assert ids(loaded.search(SearchQuery(text="手表", filters={"gender": ["women"]}))) == ["cn-smartwatch"]


def test_browse_is_in_id_order_and_paged_by_size(loaded, catalog_docs):
    results = loaded.search(SearchQuery(size=5))
    assert ids(results) == sorted(d.id for d in catalog_docs)[:5]
    assert results.total == len(catalog_docs)


def test_facet_counts_per_family(loaded, catalog_docs):
    results = loaded.search(SearchQuery(facets=("color", "gender"), filters={"category": ["watch", "jeans", "top"]}))
    chosen = [d for d in catalog_docs if d.tags["category"][0].value in {"watch", "jeans", "top"}]
    for family in ("color", "gender"):
        counts = Counter(t.value for d in chosen for t in d.tags.get(family, []))
        assert dict(results.facets[family]) == dict(counts)
        assert [n for _, n in results.facets[family]] == sorted(counts.values(), reverse=True)
    # on a text query, facets count its matches
    watches = loaded.search(SearchQuery(text="手表", facets=("color", "gender")))
    assert watches.facets == {"color": [("black", 2)], "gender": [("men", 1), ("women", 1)]}


def test_hybrid_adds_the_vector_neighbours_that_bm25_misses(loaded):
    bm25 = loaded.search(SearchQuery(text="denim"))
    assert ids(bm25) == ["en-jeans"]
    hybrid = loaded.search(SearchQuery(text="denim", vector=topic_vector("denim"), size=3))
    assert ids(hybrid)[:2] == ["en-jeans", "cn-jeans"]  # the Chinese jeans come in through kNN
    assert hybrid.hits[0].score > hybrid.hits[1].score
    # a Chinese query brings the English product the same way
    assert set(ids(loaded.search(SearchQuery(text="牛仔", vector=topic_vector("denim"))))[:2]) == {"cn-jeans", "en-jeans"}


def test_hybrid_honours_filters_and_counts_the_union(loaded):
    results = loaded.search(SearchQuery(text="denim", vector=topic_vector("denim"), filters={"gender": ["women"]},
                                        facets=("category",)))
    assert ids(results)[0] == "cn-jeans"
    women = {"cn-jeans", "cn-smartwatch", "cn-dress", "en-shoes", "en-dress", "en-hoodie"}
    assert set(ids(results)) == women  # kNN window covers every filtered product
    assert results.total == len(women)
    assert sum(n for _, n in results.facets["category"]) == len(women)


def test_hits_total_and_facets_come_from_one_candidate_set(loaded):
    """Hybrid and vector-only: the hits of a page deep enough to hold them all are exactly what the total and
    the facets count: the text matches plus the neighbours within the similarity cutoff, not the kNN window."""
    def everything(query: SearchQuery):
        results = loaded.search(dataclasses.replace(query, size=50, window=50, facets=("category", "color")))
        assert results.total == len(results.hits) and results.total_relation == "eq"
        for family in ("category", "color"):
            counted = Counter(value for hit in results.hits for value in hit.tags.get(family, []))
            assert dict(results.facets[family]) == dict(counted)
        return set(ids(results))

    watches = {"cn-watch", "cn-smartwatch", "en-watch"}
    assert everything(SearchQuery(text="watch", vector=topic_vector("watch"), min_similarity=0.5)) == watches
    assert everything(SearchQuery(vector=topic_vector("watch"), min_similarity=0.5)) == watches
    # without a cutoff, the whole window counts: every product "matches" (what the cutoff is for)
    assert len(everything(SearchQuery(text="watch", vector=topic_vector("watch")))) == 12
    # something the catalog lacks: no text match and no neighbour close enough, so nothing at all
    elsewhere = np.zeros(DIMS.text, dtype=np.float32)
    elsewhere[14] = 1.0
    assert everything(SearchQuery(text="umbrella", vector=elsewhere, min_similarity=0.5)) == set()
    assert everything(SearchQuery(vector=elsewhere, min_similarity=0.5)) == set()


def test_vector_only_search_ranks_by_similarity(loaded):
    results = loaded.search(SearchQuery(vector=topic_vector("watch"), size=3))
    assert set(ids(results)) == {"cn-watch", "cn-smartwatch", "en-watch"}
    assert [h.score for h in results.hits] == sorted((h.score for h in results.hits), reverse=True)


def test_similar_excludes_the_product_and_honours_filters(loaded):
    neighbours = ids(loaded.similar("cn-watch", k=2))
    assert set(neighbours) == {"cn-smartwatch", "en-watch"}
    assert "cn-watch" not in ids(loaded.similar("cn-watch", k=50))
    assert ids(loaded.similar("cn-watch", k=1, filters={"color": ["brown"]})) == ["en-watch"]
    filtered = loaded.similar("en-jeans", k=20, filters={"gender": ["women"], "color": ["blue", "red"]})
    assert set(ids(filtered)) == {"cn-jeans", "cn-dress", "en-dress", "en-hoodie"}
    assert ids(filtered)[0] == "cn-jeans"
    with pytest.raises(NotFound, match="no-such-product"):
        loaded.similar("no-such-product")


def test_delete_removes_from_text_vectors_and_count(loaded, catalog_docs):
    report = loaded.delete(["cn-jeans", "never-indexed"])
    assert (report.deleted, report.failed) == (1, [])
    assert loaded.count() == len(catalog_docs) - 1
    assert ids(loaded.search(SearchQuery(text="牛仔"))) == []
    assert "cn-jeans" not in ids(loaded.similar("en-jeans", k=20))
    assert "cn-jeans" not in ids(loaded.search(SearchQuery(vector=topic_vector("denim"), size=20)))


def test_full_reindex_replaces_the_content(loaded, catalog_docs):
    keep = [d for d in catalog_docs if d.id != "en-shoes"]
    renamed = dataclasses.replace(keep[0], title="女士高腰牛仔裤 新款", content_hash="hash-2")
    report = loaded.reindex([renamed, *keep[1:]])
    assert report.ok and report.written == len(keep)
    assert loaded.count() == len(keep)
    assert ids(loaded.search(SearchQuery(text="running shoes"))) == []
    assert ids(loaded.search(SearchQuery(text="新款")))[0] == renamed.id
    assert set(ids(loaded.search(SearchQuery(text="手表")))) == {"cn-watch", "cn-smartwatch"}
    assert "en-shoes" not in ids(loaded.similar("en-jeans", k=20))


def test_index_stays_searchable_and_complete_during_full_reindex(loaded, catalog_docs):
    seen_during: list[list[str]] = []

    def docs() -> Iterator[SearchDoc]:
        for i, doc in enumerate(catalog_docs):
            if i == len(catalog_docs) // 2:
                seen_during.append(ids(loaded.search(SearchQuery(size=50))))
            yield dataclasses.replace(doc, title=doc.title + " v2")

    assert loaded.reindex(docs()).ok
    assert seen_during == [sorted(d.id for d in catalog_docs)]
    assert loaded.search(SearchQuery(text="连衣裙")).hits[0].title.endswith(" v2")


def test_incremental_reindex_writes_only_changed_products(loaded, catalog_docs):
    assert loaded.reindex(catalog_docs, incremental=True).written == 0  # nothing changed
    retagged = dataclasses.replace(catalog_docs[0], tags={"category": [DocTag("jeans", 0.95, "feedback")],
                                                          "color": [DocTag("black", 0.95, "feedback")]})
    new = dataclasses.replace(catalog_docs[1], id="cn-watch-2", title="复古机械手表")
    report = loaded.reindex([retagged, *catalog_docs[1:], new], incremental=True)
    assert report.ok and report.written == 2
    assert loaded.count() == len(catalog_docs) + 1
    assert "cn-jeans" in ids(loaded.search(SearchQuery(filters={"color": ["black"]}, size=50)))
    assert set(ids(loaded.search(SearchQuery(text="手表")))) == {"cn-watch", "cn-smartwatch", "cn-watch-2"}


def test_rejected_product_in_full_reindex_keeps_the_old_index(loaded, catalog_docs):
    bad = dataclasses.replace(catalog_docs[0], id="bad-dims", text_vector=np.ones(DIMS.text + 3, dtype=np.float32))
    report = loaded.reindex([bad, *[dataclasses.replace(d, title="replaced") for d in catalog_docs[1:]]])
    assert [pid for pid, _ in report.failed] == ["bad-dims"] and report.written == 0
    assert loaded.count() == len(catalog_docs)
    assert ids(loaded.search(SearchQuery(text="牛仔"))) == ["cn-jeans"]
    assert ids(loaded.search(SearchQuery(text="replaced"))) == []


def test_upsert_reports_a_rejected_product_and_writes_the_rest(search_backend, catalog_docs):
    bad = dataclasses.replace(catalog_docs[0], id="bad-dims", fused_vector=np.ones(DIMS.fused - 1, dtype=np.float32))
    report = search_backend.upsert([bad, *catalog_docs[1:]])
    assert [pid for pid, _ in report.failed] == ["bad-dims"]
    assert report.written == len(catalog_docs) - 1 == search_backend.count()


def test_path_valued_tags_filter_and_facet_on_every_level(search_backend):
    """`category = "Apparel > Topwear > Tshirts"` is searchable per level (`category@1`, `category@2`, …),
    the level's value being the path down to it, with the same answers from every backend."""
    from fixtures_search import make_doc

    from shoptag.pipeline.search_docs import doc_tags

    paths = {"p1": "Apparel > Topwear > Tshirts", "p2": "Apparel > Topwear > Shirts",
             "p3": "Apparel > Bottomwear > Jeans", "p4": "Footwear > Shoes > Sneakers", "p5": "Accessories"}
    docs = [dataclasses.replace(make_doc(pid, f"cotton item {pid}", "", "top", {}, seed=i),
                                tags=doc_tags({"category": [(path, "manual", 1.0)]}))
            for i, (pid, path) in enumerate(paths.items())]
    assert set(docs[0].tags) == {"category", "category@1", "category@2", "category@3"}
    assert set(docs[4].tags) == {"category"}  # a flat value has no levels
    assert search_backend.upsert(docs).ok
    top = search_backend.search(SearchQuery(text="cotton", filters={"category@1": ["Apparel"]},
                                            facets=("category@2", "category@1")))
    assert sorted(ids(top)) == ["p1", "p2", "p3"]
    assert dict(top.facets["category@2"]) == {"Apparel > Topwear": 2, "Apparel > Bottomwear": 1}
    second = search_backend.search(SearchQuery(text="cotton", filters={"category@2": ["Apparel > Topwear"]}))
    assert sorted(ids(second)) == ["p1", "p2"]
    every = search_backend.search(SearchQuery(text="cotton", facets=("category@1",)))
    assert dict(every.facets["category@1"]) == {"Apparel": 3, "Footwear": 1}
