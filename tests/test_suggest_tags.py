"""Tag suggestions mined from titles: phrases, their ranking, and synonyms merged into one suggestion."""

from __future__ import annotations

import re

import numpy as np
import pytest

from shoptag.taxonomy.keyphrases import mine_phrases
from shoptag.taxonomy.suggest import same_name, suggest

TITLES = [
    "Slim fit blue jeans", "Black jeans for men", "Ripped jeans", "Washed jean", "Stretch jean", "Dark jean",
    "Denim pants for women", "Denim pants, straight", "Light denim pants",
    "Cotton trousers", "Formal trousers", "Chino trousers",
    "Running shoes", "Trail running shoes", "Kids running shoes",
    "Steel water bottle", "Sports water bottle", "Kids water bottle",
]


@pytest.mark.slow
def test_synonyms_merge_and_products_are_listed(minilm) -> None:
    phrases = mine_phrases(TITLES, min_products=3)
    assert {"jeans", "jean", "denim pants", "running shoes", "water bottle"} <= set(phrases)
    assert "for" not in phrases and not any(p.startswith("for ") for p in phrases)
    names = list(phrases)
    found = suggest(phrases, minilm.encode(names, query=True), minilm.encode(TITLES), known={"trousers"})
    by_member = {n: s for s in found for n in [s.value, *s.synonyms]}
    jeans = by_member["jeans"]
    assert {"jean", "denim pants"} <= {jeans.value, *jeans.synonyms}
    assert jeans.rows == list(range(9))  # every product any of its phrases covers
    assert by_member["running shoes"] is not jeans and by_member["water bottle"] is not jeans
    assert "trousers" not in by_member  # already a tag
    assert [s.score for s in found] == sorted((s.score for s in found), reverse=True)


def test_chinese_keyphrases_with_jieba() -> None:
    titles = ["夏季孕妇连衣裙宽松", "孕妇连衣裙长款", "孕妇连衣裙新款包邮", "男士双肩包电脑包", "双肩包旅行大容量", "学生双肩包"]
    phrases = mine_phrases(titles, min_products=3)
    assert "双肩包" in phrases and phrases["双肩包"] == [3, 4, 5]
    assert "包邮" not in phrases and "新款" not in phrases
    assert all(len(p) > 1 for p in phrases)


def test_a_catalog_of_chinese_and_english_titles_gets_phrases_of_both() -> None:
    titles = ["男士双肩包电脑包", "双肩包旅行大容量", "学生双肩包", *TITLES[:12]]  # most of the catalog is English
    phrases = mine_phrases(titles, min_products=3)
    assert phrases["双肩包"] == [0, 1, 2] and "jeans" in phrases and "denim pants" in phrases
    assert not any("包" in p and " " in p for p in phrases)  # Chinese titles never go through the n-grams


def test_an_existing_tag_value_is_not_suggested_in_another_spelling() -> None:
    assert same_name("T-Shirts") == same_name("t shirt") and same_name("Jeans") == same_name("jean")
    rows = {"t shirt": [0, 1, 2], "jeans": [3, 4, 5]}
    v = np.eye(2, dtype=np.float32)
    found = suggest(rows, v, np.vstack([np.tile(v[0], (5, 1)), np.tile(v[1], (5, 1))]), known={"T-Shirts"})
    assert [s.value for s in found] == ["jeans"]


def test_a_phrase_on_most_products_is_not_suggested() -> None:
    rows = {"everything": list(range(8)), "jeans": [0, 1, 2]}
    v = np.eye(2, dtype=np.float32)
    products = np.tile(v[1], (10, 1))
    found = suggest(rows, v, products)
    assert [s.value for s in found] == ["jeans"]


@pytest.mark.slow
@pytest.mark.data
def test_suggestions_on_a_taobao_slice_are_chinese_and_new(taobao_slice, tmp_path) -> None:
    """Chinese titles give Chinese keyphrases; a value any family already holds (the product types and brands
    of the slice) is never suggested."""
    from shoptag.core.settings import Settings
    from shoptag.pipeline.encode import Encoders
    from shoptag.pipeline.ingest import ingest
    from shoptag.pipeline.suggest_tags import suggest_tags
    from shoptag.pipeline.workspace import Workspace

    settings = Settings(workspace=tmp_path / "ws", encoders={"text_model": "use-multilingual"})
    store = Workspace(settings.workspace).open_store()
    try:
        ingest(settings, store, taobao_slice.path, show_progress=False)
        found = suggest_tags(settings, store, Encoders(settings.encoders), limit=30, show_progress=False)
    finally:
        store.close()
    existing = {same_name(v) for r in taobao_slice.records for values in r.get("tags", {}).values() for v in values}
    names = [n for s in found for n in [s["value"], *s["synonyms"]]]
    assert len(found) >= 10 and sum(bool(re.search(r"[\u4e00-\u9fff]", s["value"])) for s in found) >= 0.8 * len(found)
    assert not {same_name(n) for n in names} & existing
    # without the exclusion, common product types of the slice would be among the phrases mined
    assert existing & {same_name(p) for p in mine_phrases([r["title"] for r in taobao_slice.records], 3)}
