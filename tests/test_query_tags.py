"""Query understanding: where a text names a tag value (pure matching), and what the storefront does with the
tags of a query (the tagger's confident ones and the named ones) on the trained sample workspace."""

from __future__ import annotations

import pytest

from shoptag.indexer.documents import SearchQuery
from shoptag.pipeline.query_tags import applied, understand
from shoptag.pipeline.search import query_model
from shoptag.tagger.names import name_patterns, named_values

VALUES = ["Blue", "Navy Blue", "Shirts", "Men", "Women", "双肩包", "包", "耐克", "Apparel > Tops > T-Shirts"]


def named(text: str) -> list[str]:
    return sorted(VALUES[i] for i in named_values(text, name_patterns(VALUES)))


@pytest.mark.parametrize(("text", "expected"), [
    ("navy blue shirts for men", ["Men", "Navy Blue", "Shirts"]),  # the longest name wins its words
    ("blue shirt", ["Blue", "Shirts"]),  # a plural name is named by its singular and the other way round
    ("shirts for women", ["Shirts", "Women"]),  # "men" inside "women" is no word of its own
    ("ＮＡＶＹ　ＢＬＵＥ", ["Navy Blue"]),  # full-width letters and space
    ("耐克双肩包", ["双肩包", "耐克"]),  # CJK names anywhere, no spaces needed
    ("包邮 耐克", ["耐克"]),  # a single CJK character is a name only as a word of its own ("包邮": free shipping)
    ("包", ["包"]),
    ("cotton t-shirts", ["Apparel > Tops > T-Shirts"]),  # a path value is named by its last level
    ("bluetooth speaker", []),
])
def test_a_text_names_the_values_a_shopper_would_read_in_it(text, expected):
    assert named(text) == expected


@pytest.fixture(scope="module")
def sample_model(trained_sample):
    settings, _, encoders = trained_sample
    model = query_model(settings, encoders)
    assert model is not None
    return model, encoders


def tags_of(sample_model, text: str, mode: str = "boost"):
    model, encoders = sample_model
    return understand(model, text, encoders.text.encode([text], query=True)[0], mode)


def test_named_values_are_query_tags_whatever_their_score(sample_model):
    tags = {(t.family, t.value): t for t in tags_of(sample_model, "navy blue jeans")}
    assert tags[("colour", "Navy Blue")].named and tags[("category", "Jeans")].named
    assert ("colour", "Blue") not in tags or not tags[("colour", "Blue")].named  # "navy blue" read once
    for tag in tags.values():  # a tag comes either named or because the tagger accepts it
        assert tag.named or (tag.threshold is not None and tag.score >= tag.threshold)
        assert set(tag.sources) >= {"knn", "head"} and tag.used_as == "boost"
    assert all(not t.named for t in tags_of(sample_model, "something to wear to work"))
    assert tags_of(sample_model, "navy blue jeans", "off") == []


def test_boost_mode_boosts_every_tag_and_keeps_the_vector_half_among_the_named_ones(sample_model):
    tags = tags_of(sample_model, "通勤 black dresses")
    query = applied(SearchQuery(text="通勤 black dresses"), tags, "boost")
    assert query.vector_filters == {"category": ["Dresses"], "colour": ["Black"], "scene": ["通勤"]}
    assert query.boosts == {f: [t.value for t in tags if t.family == f] for f in {t.family for t in tags}}
    suggested = tags_of(sample_model, "通勤 black dresses", "suggest")
    assert {t.used_as for t in suggested} == {"suggestion"}
    assert applied(SearchQuery(text="x"), suggested, "suggest") == SearchQuery(text="x")  # the ranking is left alone
    shop_filtered = applied(SearchQuery(text="black dresses", filters={"colour": ["Red"]}), tags, "boost")
    assert shop_filtered.knn_filters["colour"] == ["Red"]  # the shop's own filter decides its family
