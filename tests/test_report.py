"""The evaluation report: tables side by side, best in bold, fused delta, plots, and the accepted input shapes."""

from __future__ import annotations

import json
import math
from pathlib import Path

from shoptag.pipeline.report import MethodResult, normalize_results, results_to_json, write_report

RELIABILITY = {"bin_conf": [0.15, float("nan"), 0.85], "bin_acc": [0.1, float("nan"), 0.9], "bin_count": [10, 0, 30]}


def _results() -> dict:
    return {
        "fashion": {
            "articleType": {
                "tfidf-lr": MethodResult(
                    metrics={"accuracy": 0.95, "f1_weighted": 0.94, "f1_macro": 0.80, "ece": 0.05},
                    per_class_f1=[0.9, 0.2, float("nan")],
                    class_frequency=[500, 3, 40],
                ),
                "knn": MethodResult(metrics={"accuracy": 0.90, "f1_weighted": 0.89, "f1_macro": 0.70, "ece": 0.02}),
                "fused": MethodResult(
                    metrics={"accuracy": 0.96, "f1_weighted": 0.955, "f1_macro": 0.78, "precision_at_target": math.nan},
                    reliability=RELIABILITY,
                    per_class_f1=[0.95, 0.1, 1.0],
                    class_frequency=[500, 3, 40],
                    notes=["lexical weight 0.4"],
                ),
            }
        }
    }


def test_report_tables_plots_and_delta(tmp_path: Path) -> None:
    written = write_report(_results(), tmp_path, notes=["test split"])
    md = written["report.md"].read_text()
    assert "| fused | **0.9600** | **0.9550** | 0.7800 | – |" in md  # best per column in bold, NaN as a dash
    assert "| tfidf-lr | 0.9500 | 0.9400 | **0.8000** |" in md
    assert "| knn | 0.9000 | 0.8900 | 0.7000 | – | **0.0200** |" in md  # lower ECE is better
    assert "+0.0150 / -0.0200 vs tfidf-lr" in md  # fused minus the best baseline: weighted / macro F1
    assert "- fused: lexical weight 0.4" in md and "- test split" in md
    html = written["report.html"].read_text()
    assert "<b>0.9550</b>" in html and html.count("<table>") == 2
    for name in ("fashion-articletype-reliability", "fashion-articletype-long-tail"):
        assert written[name].read_bytes()[:4] == b"\x89PNG"
        assert f"{name}.png" in md and f'src="{name}.png"' in html


def test_report_takes_the_evaluate_pipeline_shape(tmp_path: Path) -> None:
    evaluation = {
        "split": {"train": 70, "val": 15, "test": 15},
        "families": {
            "usage": {
                "multilabel": False,
                "methods": {
                    "tfidf-lr": {"f1_weighted": 0.7, "f1_macro": 0.5, "coverage_at_target": 0.4},
                    "fused": {
                        "f1_weighted": 0.8,
                        "f1_macro": 0.6,
                        "coverage_at_target": 0.5,
                        "reliability": {"confidence": [0.2, 0.0, 0.9], "accuracy": [0.3, 0.0, 0.8], "count": [5, 0, 9]},
                    },
                },
            }
        },
    }
    written = write_report({"catalog": evaluation}, tmp_path)
    md = written["report.md"].read_text()
    assert "| fused | **0.8000** | **0.6000** | **0.5000** |" in md
    assert "catalog-usage-reliability" in written


def test_json_round_trip_keeps_nan_and_curves() -> None:
    text = json.dumps(results_to_json(_results()), allow_nan=False)  # strict JSON: NaN written as null
    back = normalize_results(json.loads(text))
    fused = back["fashion"]["articleType"]["fused"]
    assert math.isnan(fused.metrics["precision_at_target"]) and fused.metrics["f1_weighted"] == 0.955
    assert fused.reliability["bin_count"] == [10, 0, 30] and fused.reliability["bin_conf"][1] is None
    assert back["fashion"]["articleType"]["tfidf-lr"].class_frequency == [500, 3, 40]
