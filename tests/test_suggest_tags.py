"""Tag suggestions mined from titles: phrases, their ranking, and synonyms merged into one suggestion."""

from __future__ import annotations

import numpy as np
import pytest

from shoptag.taxonomy.keyphrases import is_chinese, mine_phrases
from shoptag.taxonomy.suggest import suggest

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
    assert is_chinese(titles) and not is_chinese(["Blue jeans"])
    phrases = mine_phrases(titles, min_products=3)
    assert "双肩包" in phrases and phrases["双肩包"] == [3, 4, 5]
    assert "包邮" not in phrases and "新款" not in phrases
    assert all(len(p) > 1 for p in phrases)


def test_a_phrase_on_most_products_is_not_suggested() -> None:
    rows = {"everything": list(range(8)), "jeans": [0, 1, 2]}
    v = np.eye(2, dtype=np.float32)
    products = np.tile(v[1], (10, 1))
    found = suggest(rows, v, products)
    assert [s.value for s in found] == ["jeans"]
