"""Taxonomy files (good and bad), tag-name checks and path-consistent decisions over level scores."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from shoptag.taxonomy.names import tag_name_problem
from shoptag.taxonomy.paths import decide_paths, inconsistent, independent_columns, joint_scores, path_columns
from shoptag.taxonomy.tree import TaxonomyError, from_paths, parse_taxonomy, read_taxonomy


def _problems(text: str) -> list[tuple[int | None, str]]:
    with pytest.raises(TaxonomyError) as e:
        parse_taxonomy(text.splitlines(), "t.txt")
    return e.value.problems


def test_google_file_reads_whole(data_dir: Path) -> None:
    tax = read_taxonomy(data_dir / "taxonomy" / "google-product-taxonomy.en-US.txt")
    assert len(tax) == 5595 and tax.depth == 7
    jeans = tax.find("Apparel & Accessories > Clothing > Pants")
    assert jeans is not None
    assert [tax.nodes[i].name for i in tax.ancestors(jeans)] == ["Clothing", "Apparel & Accessories"]
    assert tax.nodes[tax.find("Animals & Pet Supplies")].line == 1 + 1  # after the version comment


def test_shopify_and_user_lines_with_synonyms() -> None:
    shopify = parse_taxonomy(["aa : Apparel & Accessories", "gid://shopify/TaxonomyCategory/aa-1 : Apparel & Accessories > Clothing"])
    assert [n.path for n in shopify.nodes] == [("Apparel & Accessories",), ("Apparel & Accessories", "Clothing")]
    user = parse_taxonomy(["Apparel > Bottomwear > Jeans | jean, denim pants | trousers of denim", "", "# comment"])
    jeans = user.nodes[user.find("Jeans")]
    assert jeans.synonyms == ("jean", "denim pants") and jeans.description == "trousers of denim"
    assert len(user) == 3 and user.nodes[user.find("Apparel")].line is None  # ancestors added implicitly
    assert user.paths() == [("Apparel", "Bottomwear", "Jeans")]


def test_bad_files_say_every_problem_with_its_line() -> None:
    problems = _problems(
        "A > B\n"
        "A > B\n"            # 2 duplicate
        "A >  > C\n"         # 3 empty name
        "A / B / C\n"        # 4 other separator than line 1
        "A > B / C\n"        # 5 two separators in one path
        "A > B > A\n"        # 6 cycle
        "A > A > Key chain\n"  # 7 a catch-all child, allowed
    )
    lines = {n: m for n, m in problems}
    assert sorted(lines) == [2, 3, 4, 5, 6]
    assert "duplicate" in lines[2] and "line 1" in lines[2]
    assert "empty name" in lines[3]
    assert "one separator per file" in lines[4]
    assert "mixed separators" in lines[5]
    assert "cycle" in lines[6]
    with pytest.raises(TaxonomyError, match="line 3: empty name"):
        parse_taxonomy("A > B\nA > B\nA >  > C".splitlines())
    assert _problems("\n# only a comment\n") == [(None, "no categories found")]


def test_not_utf8_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes("A > 裙子".encode("gbk"))
    with pytest.raises(TaxonomyError, match="not UTF-8"):
        read_taxonomy(bad)
    with pytest.raises(TaxonomyError, match="file not found"):
        read_taxonomy(tmp_path / "none.txt")


def test_100k_nodes_handled_and_limit_named() -> None:
    lines = [f"Top {a} > Mid {b} > Leaf {c}" for a in range(10) for b in range(100) for c in range(100)]
    start = time.perf_counter()
    tax = parse_taxonomy(lines)
    assert len(tax) == 10 + 1000 + 100_000 and time.perf_counter() - start < 20
    with pytest.raises(TaxonomyError, match="more than 5000 categories"):
        parse_taxonomy(lines[:6000], max_nodes=5000)


def test_from_labels_paths_and_levels() -> None:
    tax = from_paths(["Apparel > Topwear > Tshirts", "Apparel > Topwear > Tshirts", "Footwear / Shoes"])
    assert len(tax) == 5  # "Footwear / Shoes" uses its own separator: a label is one path
    levels = from_paths([["Apparel", "Topwear", "Tshirts"], ["Footwear", "Shoes", ""], ["Accessories", "Belts", "Belts"]])
    assert ("Footwear", "Shoes") in levels.paths() and ("Accessories", "Belts", "Belts") in levels.paths()


@pytest.mark.parametrize("name", ["a", "裙", " the ", "包邮", "", "AND"])
def test_tag_names_refused(name: str) -> None:
    assert tag_name_problem(name) is not None


@pytest.mark.parametrize("name", ["Jeans", "孕妇装", "Valentine's gift"])
def test_tag_names_allowed(name: str) -> None:
    assert tag_name_problem(name) is None


# ---- path consistency ----------------------------------------------------------------------------------------
LEVELS = (["Apparel", "Footwear"], ["Bottomwear", "Shoes"], ["Jeans", "Sneakers"])
PATHS = [("Apparel", "Bottomwear", "Jeans"), ("Footwear", "Shoes", "Sneakers")]


def test_contradiction_resolved_by_joint_score() -> None:
    columns = path_columns(PATHS, LEVELS)
    # each level alone says Footwear > Bottomwear > Jeans; jointly Apparel > Bottomwear > Jeans wins (0.45*0.8*0.9)
    scores = [np.array([[0.45, 0.55]]), np.array([[0.8, 0.2]]), np.array([[0.9, 0.1]])]
    thresholds = [np.full(2, 0.5)] * 3
    alone = independent_columns(scores, thresholds)
    assert alone.tolist() == [[1, 0, 0]] and inconsistent(alone, columns).all()
    joint = decide_paths(scores, thresholds, columns)
    assert joint.columns.tolist() == [[0, 0, 0]] and not inconsistent(np.where(joint.accepted, joint.columns, -1), columns).any()
    # the master level was below its threshold, and is accepted because its child is: derived
    assert joint.accepted.tolist() == [[True, True, True]] and joint.derived.tolist() == [[True, False, False]]
    assert 0 < joint.joint[0] < 1


def test_child_implies_ancestors_and_review_stays_review() -> None:
    columns = path_columns(PATHS, LEVELS)
    thresholds = [np.full(2, 0.95)] * 2 + [np.full(2, 0.6)]
    child_sure = [np.array([[0.3, 0.7]]), np.array([[0.3, 0.7]]), np.array([[0.2, 0.8]])]
    d = decide_paths(child_sure, thresholds, columns)
    assert d.columns.tolist() == [[1, 1, 1]] and d.accepted.all() and d.derived.tolist() == [[True, True, False]]
    unsure = [np.array([[0.5, 0.5]])] * 3
    d = decide_paths(unsure, thresholds, columns)
    assert not d.accepted.any()


def test_unknown_level_value_and_partial_emission() -> None:
    columns = path_columns([*PATHS, ("Apparel", "Bottomwear", "Rare")], LEVELS)
    assert [-1] in columns[:, 2:].tolist()
    scores = [np.array([[0.9, 0.1]]), np.array([[0.9, 0.1]]), np.array([[0.5, 0.5]])]
    assert joint_scores(scores, columns).shape == (1, 3)
    # a product whose only emitted level is the top one is consistent with any path below it
    assert not inconsistent(np.array([[0, -1, -1], [1, -1, 0]]), columns)[0]
    assert inconsistent(np.array([[1, -1, 0]]), columns).all()
