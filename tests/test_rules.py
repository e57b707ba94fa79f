"""The rule layer: parsing with line numbers, what rules do to a product, and their precision report."""

from __future__ import annotations

import pytest

from shoptag.taxonomy.rules import RuleError, apply_rules, parse_rules, precision_report

RULES = """
# maternity wear is named in the title
title contains "孕妇" -> style: maternity
title contains "jeans" -> articleType: Jeans
never gender=Boys when masterCategory=Home
"""


def test_parse_and_bad_lines() -> None:
    rules = parse_rules(RULES.splitlines())
    assert [(r.line, r.kind, r.family, r.value) for r in rules] == [
        (3, "add", "style", "maternity"), (4, "add", "articleType", "Jeans"), (5, "never", "gender", "Boys")]
    with pytest.raises(RuleError) as e:
        parse_rules(['title contains "x" -> style: the', "tag everything red", 'text contains "红" -> colour: 红']) 
    assert [n for n, _ in e.value.problems] == [1, 2, 3]
    assert "stop word" in e.value.problems[0][1] and "not a rule" in e.value.problems[1][1]
    assert "one character" in e.value.problems[2][1]


def test_apply_adds_and_blocks_only_model_families() -> None:
    rules = parse_rules(RULES.splitlines())
    texts = {"title": "夏季孕妇连衣裙", "text": "夏季孕妇连衣裙"}
    effects = apply_rules(rules, texts, {"gender": ["Boys"], "masterCategory": ["Home"]}, {"masterCategory"})
    assert [(e.action, e.family, e.value, e.rule.line) for e in effects] == [
        ("added", "style", "maternity", 3), ("blocked", "gender", "Boys", 5)]
    # gender tagged by a person: never blocked; style already there: not added twice
    effects = apply_rules(rules, texts, {"gender": ["Boys"], "masterCategory": ["Home"], "style": ["maternity"]}, {"gender"})
    assert effects == []


def test_precision_report_against_labels() -> None:
    rules = parse_rules(RULES.splitlines())
    texts = [{"title": "Blue Jeans"}, {"title": "Slim jeans jacket"}, {"title": "Shirt"}, {"title": "Jeans"}]
    labels = [{"articleType": ["Jeans"]}, {"articleType": ["Jackets"]}, {"articleType": ["Shirts"]}, {}]
    report = {r["line"]: r for r in precision_report(rules, texts, labels)}
    assert report[4]["fired_on_labelled"] == 2 and report[4]["correct"] == 1 and report[4]["precision"] == 0.5
    assert report[3]["precision"] is None  # no product labelled in style: nothing to measure against
    never = precision_report(rules[2:], [{}] * 3, [
        {"gender": ["Unisex"], "masterCategory": ["Home"]}, {"gender": ["Boys"], "masterCategory": ["Home"]},
        {"gender": ["Boys"], "masterCategory": ["Apparel"]}])
    assert never[0]["fired_on_labelled"] == 2 and never[0]["precision"] == 0.5
