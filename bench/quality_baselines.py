"""TF-IDF + logistic regression baseline on every tag family of the public data, on the fixed split.

Fashion (44,446 English titles, 7 single-valued families) and taobao-ner (6,998 Chinese titles, train + dev,
multi-valued product_type and brand). Grouped split (`grouped_split` by normalised title: the same title never
straddles train and test; validation 0.15, test 0.15); the
vocabulary of a family is the tags seen at least `--min-tag-count` times in training (the tagger's rule),
test tags outside it are reported as `test_oov` (share of test tag occurrences) and left out of the scores,
as are products with no tag inside it. Thresholds for the target
precision are chosen on validation and applied to test.

    .venv/bin/python bench/quality_baselines.py            # writes bench/results/quality_baselines.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter
from pathlib import Path

import numpy as np

from shoptag.pipeline.datasets import default_data_dir, fashion_records, taobao_records
from shoptag.pipeline.report import MethodResult, results_to_json, write_report
from shoptag.tagger.lexical import LexicalClassifier
from shoptag.tagger.metrics import classification_metrics, evaluate_scores
from shoptag.tagger.split import grouped_split

VALIDATION, TEST = 0.15, 0.15


def _labels(tags: list[list[str]], index: dict[str, int], multilabel: bool) -> np.ndarray:
    """Int labels (-1: no tag in the vocabulary) or multi-hot rows over the vocabulary."""
    if not multilabel:
        return np.array([index.get(t[0], -1) for t in tags])
    y = np.zeros((len(tags), len(index)), dtype=np.int8)
    for row, values in enumerate(tags):
        y[row, [index[v] for v in values if v in index]] = 1
    return y


def evaluate_family(
    ids: list[str], titles: list[str], tags: list[list[str]], multilabel: bool, args: argparse.Namespace
) -> tuple[dict[str, MethodResult], dict]:
    """Fit on train, pick thresholds on validation, score test: the TF-IDF+LR baseline (and the
    majority class for single-valued families, as a floor)."""
    masks = grouped_split(ids, titles, VALIDATION, TEST).masks
    seen = Counter(v for values, is_train in zip(tags, masks["train"]) if is_train for v in values)
    index = {v: i for i, v in enumerate(sorted(v for v, n in seen.items() if n >= args.min_tag_count))}
    y = _labels(tags, index, multilabel)
    # products with a tag the vocabulary can learn, or (multi-valued) labelled "no value applies"
    known = (y.any(axis=1) | np.array([not t for t in tags])) if multilabel else y >= 0
    part = {name: np.flatnonzero(m & known) for name, m in masks.items()}
    test_tags = [v for values, t in zip(tags, masks["test"]) if t for v in values]
    info = {
        "classes": len(index),
        "train": len(part["train"]),
        "val": len(part["val"]),
        "test": len(part["test"]),
        "test_oov": round(float(np.mean([v not in index for v in test_tags])), 4),
    }
    text = {name: [titles[i] for i in rows] for name, rows in part.items()}
    frequency = [seen[v] for v in index]
    results: dict[str, MethodResult] = {}
    for name, weight in (("tfidf-lr", None), *((("tfidf-lr-balanced", "balanced"),) if args.balanced else ())):
        wall, cpu = time.perf_counter(), time.process_time()
        model = LexicalClassifier(class_weight=weight).fit(text["train"], y[part["train"]], len(index), multilabel)
        fit = {"fit_seconds": time.perf_counter() - wall, "fit_cpu_seconds": time.process_time() - cpu}
        proba_val, proba_test = model.predict_proba(text["val"]), model.predict_proba(text["test"])
        scored = evaluate_scores(proba_val, y[part["val"]], proba_test, y[part["test"]], args.target_precision)
        results[name] = MethodResult(
            metrics={**scored["metrics"], **fit},
            reliability=scored["reliability"],
            per_class_f1=scored["per_class_f1"],
            class_frequency=frequency,
        )
        print(f"  {name}: fit {fit['fit_seconds']:.1f}s wall / {fit['fit_cpu_seconds']:.1f}s cpu", flush=True)
    if not multilabel:
        majority = np.full(len(part["test"]), np.bincount(y[part["train"]], minlength=len(index)).argmax())
        results["majority"] = MethodResult(metrics=classification_metrics(y[part["test"]], majority, len(index)))
    return results, info


def _machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    model = models[0] if models else platform.processor()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "gpu": False,
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
    }


COLUMNS = (
    "f1_weighted",
    "f1_macro",
    "f1_micro",
    "accuracy",
    "coverage_at_target",
    "precision_at_target",
    "ece",
    "fit_seconds",
)


def markdown(payload: dict) -> str:
    m = payload["machine"]
    lines = [
        "# TF-IDF + logistic regression baseline (test split)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, CPU only; load average at start {m['load_average_at_start']} "
        "(shared machine: wall times are upper bounds; fit_cpu_seconds in the JSON counts the main process, "
        "which is all of a single-valued fit but not the joblib workers of a multi-valued one). "
        f"Total wall time {payload['wall_seconds']:.0f} s.",
        f"Split: grouped by normalised title, validation {VALIDATION}, test {TEST}; vocabulary = tags seen ≥ "
        f"{payload['min_tag_count']}× in train; coverage / precision at target precision "
        f"{payload['target_precision']} "
        "with per-class thresholds chosen on validation. Multi-valued families (taobao): tags with p ≥ 0.5, "
        "accuracy = exact set match.",
        "",
        "| dataset | family | method | classes | train | test | test OOV | " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * (7 + len(COLUMNS)),
    ]
    for dataset, families in payload["results"].items():
        for family, methods in families.items():
            info = payload["families"][dataset][family]
            for method, result in methods.items():
                values = [(c, result["metrics"].get(c)) for c in COLUMNS]
                cells = ["–" if v is None else f"{v:.1f}" if c == "fit_seconds" else f"{v:.4f}" for c, v in values]
                lines.append(
                    f"| {dataset} | {family} | {method} | {info['classes']} | {info['train']} | {info['test']} | "
                    f"{info['test_oov']:.4f} | " + " | ".join(cells) + " |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--limit", type=int, default=None, help="first N products of each data set (quick runs)")
    parser.add_argument("--families", nargs="*", default=None, help="only these families")
    parser.add_argument("--min-tag-count", type=int, default=1)
    parser.add_argument("--target-precision", type=float, default=0.9)
    parser.add_argument("--balanced", action="store_true", help="also fit class_weight='balanced'")
    args = parser.parse_args()

    start = time.perf_counter()
    machine = _machine()
    datasets = {
        "fashion": (fashion_records(args.data_dir, limit=args.limit), False),
        "taobao": (taobao_records(args.data_dir, split="all", limit=args.limit), True),
    }
    results: dict[str, dict[str, dict[str, MethodResult]]] = {}
    families: dict[str, dict[str, dict]] = {}
    for dataset, (records, multilabel) in datasets.items():
        names = list(dict.fromkeys(f for r in records for f in r["tags"]))
        for family in names:
            if args.families and family not in args.families:
                continue
            rows = [r for r in records if family in r["tags"]]
            print(f"{dataset}/{family}: {len(rows)} products", flush=True)
            ids, titles, tags = [r["id"] for r in rows], [r["title"] for r in rows], [r["tags"][family] for r in rows]
            results.setdefault(dataset, {})[family], families.setdefault(dataset, {})[family] = evaluate_family(
                ids, titles, tags, multilabel, args
            )
    payload = {
        "machine": machine,
        "wall_seconds": time.perf_counter() - start,
        "min_tag_count": args.min_tag_count,
        "target_precision": args.target_precision,
        "families": families,
        "results": results_to_json(results),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "quality_baselines.json").write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    (args.out_dir / "quality_baselines.md").write_text(markdown(payload))
    write_report(
        results,
        args.out_dir / "quality_baselines_report",
        title="shoptag quality baselines (TF-IDF + LR)",
        notes=[f"machine: {machine['cpu']}, {machine['cores']} cores, CPU", "test split; see quality_baselines.md"],
    )
    print(markdown(payload))


if __name__ == "__main__":
    main()
