"""Quality on real data slices, with real models: fails when propagation, the head, fusion or calibration break.

The held-out evaluation (fit on train, tune on validation, score test) runs on 2,000 fashion products
(English, minilm) and 500 Chinese Taobao titles (use-multilingual)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoptag.core.settings import Settings
from shoptag.pipeline.encode import Encoders
from shoptag.pipeline.evaluate import evaluate
from shoptag.pipeline.ingest import ingest
from shoptag.pipeline.workspace import Workspace

FASHION_FAMILIES = ("articleType", "baseColour", "usage")


def _evaluate(records: list[dict], tmp: Path, **settings) -> dict:
    catalog = tmp / "catalog.jsonl"
    catalog.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records), encoding="utf-8")
    s = Settings(workspace=tmp / "ws", **settings)
    store = Workspace(s.workspace).open_store()
    try:
        report = ingest(s, store, catalog, show_progress=False)
        assert report.rejected == 0
        return evaluate(s, store, Encoders(s.encoders), show_progress=False)
    finally:
        store.close()


@pytest.fixture(scope="module")
def fashion_results(fashion_slice, tmp_path_factory):
    records = [
        {**r, "tags": {f: v for f, v in r["tags"].items() if f in FASHION_FAMILIES}} for r in fashion_slice.records
    ]
    return _evaluate(records, tmp_path_factory.mktemp("quality-fashion"), encoders={"text_model": "minilm"})


def test_every_source_learns_article_type(fashion_results):
    methods = fashion_results["families"]["articleType"]["methods"]
    assert set(methods) == {"tfidf-lr", "knn", "head", "fused"}
    for name in ("knn", "head", "tfidf-lr"):
        assert methods[name]["f1_weighted"] > 0.7, f"{name}: {methods[name]['f1_weighted']:.3f}"


def test_fusion_is_at_least_as_good_as_its_best_source(fashion_results):
    for family in FASHION_FAMILIES:
        methods = fashion_results["families"][family]["methods"]
        best_single = max(methods[m]["f1_weighted"] for m in ("knn", "head", "tfidf-lr"))
        # weights are chosen on validation; on a test split of ~300 products allow sampling noise
        assert methods["fused"]["f1_weighted"] >= best_single - 0.02, (family, methods["fused"]["f1_weighted"], best_single)


def test_fused_against_the_baseline_comes_with_a_bootstrap_interval(fashion_results):
    from shoptag.pipeline.evaluate import difference_note

    widths = []
    for family in FASHION_FAMILIES:
        fam = fashion_results["families"][family]
        methods = fam["methods"]
        assert fam["fused_vs_tfidf"]["products"] == fam["test_size"]
        for name, metric in (("weighted", "f1_weighted"), ("macro", "f1_macro")):
            d = fam["fused_vs_tfidf"][name]
            assert d["difference"] == pytest.approx(methods["fused"][metric] - methods["tfidf-lr"][metric])
            assert d["low"] <= d["difference"] <= d["high"]
            widths.append(d["high"] - d["low"])
            if d["high"] == d["low"]:  # fusion chose the lexical source alone for this family
                assert d["verdict"] == "the same on every test product"
        assert difference_note(family, fam).startswith(f"{family}: fused - tfidf-lr on {fam['test_size']} test products")
    assert max(widths) > 0


def test_calibrated_scores_reach_the_target_precision(fashion_results):
    fused = fashion_results["families"]["articleType"]["methods"]["fused"]
    assert fused["ece"] < 0.08
    assert fused["precision_at_target"] >= 0.85  # target 0.9, thresholds chosen on validation
    assert fused["coverage_at_target"] > 0.6


def test_chinese_titles_get_product_types(taobao_slice, tmp_path):
    records = [{**r, "tags": {"product_type": r["tags"]["product_type"]}} for r in taobao_slice.records
               if r.get("tags", {}).get("product_type")]
    results = _evaluate(records, tmp_path, encoders={"text_model": "use-multilingual"})
    product_type = results["families"]["product_type"]
    assert product_type["multilabel"]
    assert product_type["methods"]["fused"]["f1_micro"] > 0.3


def test_the_difference_note_judges_each_interval_as_it_prints_it():
    from shoptag.pipeline.evaluate import difference_note, verdict

    def fam(weighted: dict, macro: dict, products: int = 500) -> dict:
        return {"fused_vs_tfidf": {"products": products, "level": 0.95,
                                   "weighted": weighted | {"verdict": verdict(weighted)},
                                   "macro": macro | {"verdict": verdict(macro)}}}

    note = difference_note("usage", fam({"difference": 0.001, "low": 0.00002, "high": 0.002},
                                        {"difference": -0.01, "low": -0.02, "high": -0.001}))
    assert note.startswith("usage: fused - tfidf-lr on 500 test products: ")
    assert "weighted F1 +0.0010 (95% interval +0.0000 to +0.0020: no clear difference (the interval holds 0))" in note
    assert "macro F1 -0.0100 (95% interval -0.0200 to -0.0010: worse)" in note
    assert "+0.0003 to +0.0020: better" in difference_note("usage", fam(
        {"difference": 0.001, "low": 0.0003, "high": 0.002}, {"difference": 0.0, "low": 0.0, "high": 0.0}))
    assert "the same on every test product" in difference_note("usage", fam(
        {"difference": 0.0, "low": 0.0, "high": 0.0}, {"difference": 0.0, "low": 0.0, "high": 0.0}))
    assert difference_note("usage", {}) is None


def test_too_few_test_products_get_the_differences_without_an_interval():
    import numpy as np
    from shoptag.pipeline.evaluate import difference_note, fused_vs_baseline

    y = np.array([0])  # one held-out product: a bootstrap needs two or more
    diff = fused_vs_baseline(y, np.array([0]), np.array([1]), 3, {"f1_weighted": 1.0, "f1_macro": 1.0},
                             {"f1_weighted": 0.0, "f1_macro": 0.0})
    assert diff["products"] == 1 and diff["weighted"] == {"difference": 1.0, "low": None, "high": None, "verdict": None}
    note = difference_note("category", {"fused_vs_tfidf": diff})
    assert note == ("category: fused - tfidf-lr on 1 test product: weighted F1 +1.0000, macro F1 +1.0000 "
                    "(too few test products for an interval: 30 are needed)")
