"""The relevance benchmark's judgments and metrics: graded by the query's tags, scored as nDCG, MRR and recall."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from judged_queries import (  # noqa: E402
    JudgedQuery, chinese_queries, english_queries, english_text, grades, ndcg_at, recall_at, reciprocal_rank,
)

CATALOG = {
    "a": {"articleType": ["Shirts"], "baseColour": ["Blue"], "gender": ["Men"], "usage": ["Casual"]},
    "b": {"articleType": ["Shirts"], "baseColour": ["Blue"], "gender": ["Women"]},
    "c": {"articleType": ["Shirts"], "baseColour": ["Red"], "gender": ["Men"], "usage": ["Casual"]},
    "d": {"articleType": ["Socks"], "baseColour": ["Blue"], "gender": ["Men"], "usage": ["Casual"]},
    "e": {"articleType": ["Shirts"], "baseColour": ["Blue"], "gender": ["Men"], "usage": ["Casual"]},
}


def test_grades_count_the_query_tags_of_products_of_the_required_family():
    tags = {"articleType": "Shirts", "baseColour": "Blue", "gender": "Men", "usage": "Casual"}
    assert grades(tags, "articleType", CATALOG) == {"a": 4, "b": 2, "c": 3, "e": 4}  # socks: not an answer
    assert english_text(tags) == "blue casual shirts for men"
    query = JudgedQuery(english_text(tags), tags, "articleType", grades(tags, "articleType", CATALOG))
    assert query.perfect == {"a", "e"}


def test_metrics_reward_perfect_products_first():
    tags = {"articleType": "Shirts", "baseColour": "Blue", "gender": "Men", "usage": "Casual"}
    query = JudgedQuery("q", tags, "articleType", grades(tags, "articleType", CATALOG))
    assert ndcg_at(["a", "e", "c", "b"], query) == pytest.approx(1.0)
    assert ndcg_at(["d", "b", "c", "a"], query) < ndcg_at(["a", "b", "c", "d"], query) < 1.0
    assert reciprocal_rank(["d", "b", "e"], query) == pytest.approx(1 / 3)
    assert reciprocal_rank(["d"], query) == 0.0
    assert recall_at(["a", "d"], query) == 0.5 and recall_at(["e", "a"], query) == 1.0


def test_query_sets_are_distinct_and_each_has_perfect_products():
    english = english_queries(CATALOG, 3, min_perfect=1)
    assert len({q.text for q in english}) == len(english) >= 2
    assert all(q.perfect and "articleType" in q.tags for q in english)
    chinese = {"x": {"product_type": ["双肩包"], "brand": ["耐克"]}, "y": {"product_type": ["双肩包"]},
               "z": {"product_type": ["手表"]}}
    queries = chinese_queries(chinese, 3, min_perfect=1)
    assert {q.text for q in queries} <= {"双肩包", "耐克 双肩包", "手表"} and queries
    branded = [q for q in queries if "brand" in q.tags]
    assert all(q.grades == {"x": 2, "y": 1} for q in branded)
