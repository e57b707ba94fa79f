"""Tags without examples, measured on the public data with the labels hidden.

1. Zero-shot vs supervised: fashion `articleType` (English, minilm) and taobao product types (Chinese,
   use-multilingual and e5-small). Zero-shot scores each product against the tag names only (tagger/zero_shot:
   standardised cosines, plus the name appearing in the title); supervised is the fused tagger trained on every
   training label. Both on the same test split (id hash, 15%); weighted F1 of the top tag, and coverage at 0.9
   precision with thresholds chosen on the validation split (for zero-shot that stands for a reviewed sample).
   Then the supervised tagger trained on only k reviewed examples per tag: the k that closes half the gap.
2. Hierarchy: fashion masterCategory > subCategory > articleType, each level its own family; every level
   decided alone vs the joint path (taxonomy/paths), on the test split: level-wise and path accuracy, and the
   share of products whose emitted levels form no existing path.

    .venv/bin/python bench/tags_without_examples.py --fashion 8000   # results in bench/results/tags_without_examples.*
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from shoptag.pipeline.datasets import default_data_dir, fashion_records, taobao_records
from shoptag.tagger.metrics import evaluate_scores
from shoptag.tagger.model import FitConfig, fit_tagger, score_sources
from shoptag.tagger.split import split_mask, unit_hash
from shoptag.tagger.text_encoder import load_text_encoder
from shoptag.tagger.text_onnx import default_cache_dir
from shoptag.tagger.zero_shot import TagPrompt, literal_matches, prompt_rows, tag_vectors, text_scores
from shoptag.taxonomy.paths import decide_paths, inconsistent, independent_columns, path_columns
from shoptag.taxonomy.tree import from_paths

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = 0.9
SHOTS = (1, 2, 5, 10, 20)


def _encoder(name: str):
    return load_text_encoder(name, "cpu", 64, onnx_cache=default_cache_dir())


def _single_family(ids: list[str], titles: list[str], labels: list[str | None], min_count: int = 2) -> dict:
    """Split, vocabulary (values seen `min_count` times in training) and int labels of one family."""
    masks = split_mask(ids, 0.15, 0.15)
    seen = Counter(v for v, t in zip(labels, masks["train"]) if t and v)
    values = sorted(v for v, n in seen.items() if n >= min_count)
    index = {v: i for i, v in enumerate(values)}
    y = np.array([index.get(v, -1) if v else -1 for v in labels])
    return {"masks": masks, "values": values, "y": y}


def _evaluate(scores: np.ndarray, fam: dict) -> dict:
    """Weighted F1 on test, coverage / precision at TARGET with thresholds chosen on validation."""
    y, m = fam["y"], fam["masks"]
    val, test = m["val"] & (y >= 0), m["test"] & (y >= 0)
    r = evaluate_scores(scores[val], y[val], scores[test], y[test], TARGET)["metrics"]
    return {k: round(float(r[k]), 4) for k in ("f1_weighted", "accuracy", "coverage_at_target", "precision_at_target")}


def zero_shot(encoder, vectors: np.ndarray, titles: list[str], values: list[str], literal: bool) -> np.ndarray:
    prompts = [TagPrompt(v) for v in values]
    texts, owner = prompt_rows(prompts)
    tags = tag_vectors(encoder.encode(texts, query=True), owner, len(prompts))
    sims = vectors @ tags.T
    matches = literal_matches(titles, prompts) if literal else None
    return text_scores(sims, matches, None, multilabel=False)


def supervised(ids, vectors, titles, fam: dict, family: str, fit_mask: np.ndarray, min_count: int) -> np.ndarray:
    """Fused tagger scores of every product, trained on `fit_mask` (tuned on validation or by cross-fitting)."""
    tags = [{family: [fam["values"][c]]} if c >= 0 else {} for c in fam["y"]]
    val = fam["masks"]["val"] & (fam["y"] >= 0)
    config = FitConfig(min_tag_count=min_count)
    model = fit_tagger(ids, vectors, titles, tags, fit_mask, val if fit_mask.sum() >= 3000 else np.zeros_like(val),
                       {"text_model": "bench"}, config)
    fm = model.families[family]
    fused = score_sources(model, vectors, titles, [None] * len(ids))[family].fused
    out = np.zeros((len(ids), len(fam["values"])))
    for c, v in enumerate(fm.vocab.values):
        out[:, fam["values"].index(v)] = fused[:, c]
    return out


def k_shot_mask(ids: list[str], fam: dict, k: int) -> np.ndarray:
    """k training products per tag (fixed by id hash): what k reviewed examples per tag give."""
    train = np.flatnonzero(fam["masks"]["train"] & (fam["y"] >= 0))
    order = sorted(train, key=lambda i: unit_hash(ids[i], salt="k-shot"))
    taken, mask = Counter(), np.zeros(len(ids), dtype=bool)
    for i in order:
        if taken[fam["y"][i]] < k:
            taken[fam["y"][i]] += 1
            mask[i] = True
    return mask


def compare(name: str, encoder_name: str, ids, titles, labels) -> dict:
    start = time.perf_counter()
    encoder = _encoder(encoder_name)
    vectors = encoder.encode(titles)
    fam = _single_family(ids, titles, labels)
    out = {"data": name, "encoder": encoder_name, "products": len(ids), "tags": len(fam["values"])}
    out["zero_shot_embedding"] = _evaluate(zero_shot(encoder, vectors, titles, fam["values"], False), fam)
    out["zero_shot"] = _evaluate(zero_shot(encoder, vectors, titles, fam["values"], True), fam)
    out["supervised"] = _evaluate(supervised(ids, vectors, titles, fam, "family", fam["masks"]["train"] & (fam["y"] >= 0), 2), fam)
    shots = {}
    for k in SHOTS:
        shots[k] = _evaluate(supervised(ids, vectors, titles, fam, "family", k_shot_mask(ids, fam, k), 1), fam)
    out["k_shot"] = shots
    half = (out["zero_shot"]["f1_weighted"] + out["supervised"]["f1_weighted"]) / 2
    out["half_gap_f1"] = round(half, 4)
    out["examples_per_tag_to_close_half_the_gap"] = next((k for k in SHOTS if shots[k]["f1_weighted"] >= half), None)
    out["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(out), flush=True)
    return out


def hierarchy(ids, titles, rows: list[dict]) -> dict:
    """Levels decided alone vs jointly, on the test split."""
    start = time.perf_counter()
    levels = ("masterCategory", "subCategory", "articleType")
    encoder = _encoder("minilm")
    vectors = encoder.encode(titles)
    masks = split_mask(ids, 0.15, 0.15)
    tags = [{lvl: r["tags"][lvl] for lvl in levels if lvl in r["tags"]} for r in rows]
    model = fit_tagger(ids, vectors, titles, tags, masks["train"], masks["val"], {"text_model": "bench"}, FitConfig())
    scores = score_sources(model, vectors, titles, [None] * len(ids))
    vocabs = [list(model.families[lvl].vocab.values) for lvl in levels]
    train_paths = from_paths([[t.get(lvl, [""])[0] for lvl in levels] for t, m in zip(tags, masks["train"]) if m])
    columns = path_columns(train_paths.paths(len(levels)), vocabs)
    test = np.flatnonzero(masks["test"] & np.array([all(lvl in t for lvl in levels) for t in tags]))
    truth = np.array([[vocabs[k].index(tags[i][lvl][0]) if tags[i][lvl][0] in vocabs[k] else -2 for k, lvl in enumerate(levels)] for i in test])
    level_scores = [scores[lvl].fused[test] for lvl in levels]
    thresholds = [model.families[lvl].thresholds for lvl in levels]
    top = np.stack([s.argmax(1) for s in level_scores], 1)
    alone = independent_columns(level_scores, thresholds)
    joint = decide_paths(level_scores, thresholds, columns)
    joint_emitted = np.where(joint.accepted, joint.columns, -1)

    def summary(best: np.ndarray, emitted: np.ndarray) -> dict:
        return {
            "level_accuracy": {lvl: round(float((best[:, k] == truth[:, k]).mean()), 4) for k, lvl in enumerate(levels)},
            "path_accuracy": round(float((best == truth).all(1).mean()), 4),
            "inconsistent_top_paths": round(float(inconsistent(best, columns).mean()), 4),
            "inconsistent_emitted": round(float(inconsistent(emitted, columns).mean()), 4),
            "emitted_precision": {lvl: round(float((emitted[:, k] == truth[:, k])[emitted[:, k] >= 0].mean()), 4) for k, lvl in enumerate(levels)},
            "emitted_coverage": {lvl: round(float((emitted[:, k] >= 0).mean()), 4) for k, lvl in enumerate(levels)},
        }

    out = {
        "data": "fashion", "products": len(ids), "test_products": len(test), "paths": len(columns),
        "independent": summary(top, alone), "joint": summary(joint.columns, joint_emitted),
        "derived_share": {lvl: round(float(joint.derived[:, k].mean()), 4) for k, lvl in enumerate(levels)},
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fashion", type=int, default=8000, help="first N fashion products")
    parser.add_argument("--taobao-types", type=int, default=50, help="the N most frequent product types")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--only", choices=("fashion", "taobao", "hierarchy"), default=None)
    args = parser.parse_args()
    if not (args.data_dir / "fashion" / "products.csv").is_file():
        print(f"no data at {args.data_dir}: nothing measured")
        return
    results: dict = {"fashion_limit": args.fashion, "target_precision": TARGET, "runs": []}
    fashion = fashion_records(args.data_dir, limit=args.fashion)
    f_ids, f_titles = [r["id"] for r in fashion], [r["title"] for r in fashion]
    if args.only in (None, "fashion"):
        labels = [r["tags"].get("articleType", [None])[0] for r in fashion]
        results["runs"].append(compare("fashion articleType", "minilm", f_ids, f_titles, labels))
    if args.only in (None, "hierarchy"):
        results["hierarchy"] = hierarchy(f_ids, f_titles, fashion)
    if args.only in (None, "taobao"):
        taobao = taobao_records(args.data_dir, split="all")
        common = {v for v, _ in Counter(t for r in taobao for t in r["tags"].get("product_type", [])).most_common(args.taobao_types)}
        kept = [(r, next(t for t in r["tags"]["product_type"] if t in common)) for r in taobao
                if any(t in common for t in r["tags"].get("product_type", []))]
        results["taobao_products"] = len(kept)
        for enc in ("use-multilingual", "e5-small"):
            results["runs"].append(compare(f"taobao product type (top {args.taobao_types})", enc,
                                           [r["id"] for r, _ in kept], [r["title"] for r, _ in kept], [t for _, t in kept]))
    suffix = "" if args.only is None else f"-{args.only}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"tags_without_examples{suffix}.json").write_text(json.dumps(results, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
