"""Stage: held-out evaluation. Fit on the train split, tune on validation, measure on test, every method on
the same split: the TF-IDF + logistic regression baseline (the lexical source alone), kNN only, head only,
zero-shot CLIP (when an image tower is configured) and the fused tagger, whose difference to the baseline comes
with a paired-bootstrap interval (is it more than chance on these test products?); coverage at the target precision
uses thresholds chosen on validation per method, and the precision those accepted tags achieve on test is
reported beside the target. The split is grouped (near-duplicates on one side, `tagger/split.py`); with
`labels` the test set is the products a user holds out instead, and products grouped with them are left out
of training and tuning. Per method, a table by class frequency shows the long tail.

`for_modality` turns one configuration into its text-only, image-only and text+image variants, so the
three can be compared on the same split."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np

from shoptag.catalog.labels import read_labels
from shoptag.core.errors import BadInput
from shoptag.core.settings import Settings
from shoptag.store.records import Store
from shoptag.tagger.fuse import apply_temperature, fit_temperature
from shoptag.tagger.metrics import (
    choose_thresholds,
    classification_metrics,
    coverage_at_precision,
    expected_calibration_error,
    f1_difference_interval,
    fewest_to_certify,
    frequency_buckets,
    multilabel_metrics,
    reliability_curve,
)
from shoptag.tagger.model import TaggerModel, labelled_rows, score_sources

from .encode import Encoders
from .train import LabelledSet, fit_on, labelled_set, split_labelled
from .workspace import Workspace

METHOD_NAMES = {"lexical": "tfidf-lr", "knn": "knn", "head": "head", "fused": "fused"}
BASELINE = METHOD_NAMES["lexical"]  # the strongest simple baseline, which fused is measured against
MIN_INTERVAL_PRODUCTS = 30  # test products below which no bootstrap interval is given
ZERO_SHOT = "zero-shot-clip"
METHOD_ORDER = ("tfidf-lr", "knn", "head", ZERO_SHOT, "fused")  # how tables list them
Modality = Literal["text", "image", "text+image"]


def for_modality(settings: Settings, modality: Modality) -> Settings:
    """The settings that tag from one modality: text drops the image tower; image gives the image half all
    the weight and drops the lexical (title) source; text+image keeps both halves as configured."""
    encoders, tagger = settings.encoders, settings.tagger
    if modality == "text":
        encoders = encoders.model_copy(update={"image_model": None, "image_checkpoint": None})
    elif not encoders.image_model:
        raise BadInput(f"modality {modality!r} needs an image tower: set encoders.image_model")
    elif modality == "image":
        encoders = encoders.model_copy(update={"image_weight": 1.0})
        tagger = tagger.model_copy(update={"lexical": False})
    return settings.model_copy(update={"encoders": encoders, "tagger": tagger})


def zero_shot(model: TaggerModel, data: LabelledSet, rows: np.ndarray, encoders: Encoders) -> dict[str, np.ndarray]:
    """family -> zero-shot CLIP scores of `rows` (image against "a photo of <tag>"), for the single-valued
    families; a product without a photo gets the uniform row. Empty without an image tower."""
    if encoders.image is None or data.vectors.image is None:
        return {}
    vectors, has_image = data.vectors.image[rows], data.vectors.has_image[rows]
    out = {}
    for family, fm in model.families.items():
        if fm.vocab.multilabel:  # a softmax over prompts names one tag; a tag set needs per-tag thresholds
            continue
        scores = encoders.image.zero_shot_scores(vectors, fm.vocab.values).astype(np.float32)
        scores[~has_image] = 1.0 / len(fm.vocab)
        out[family] = scores
    return out


def _scores_by_method(
    model: TaggerModel, data: LabelledSet, rows: np.ndarray, encoders: Encoders
) -> dict[str, dict[str, np.ndarray]]:
    """family -> method -> (len(rows), C) scores; single-source methods are temperature-calibrated like the
    fused one is, so their coverage at the target precision is comparable."""
    scored = score_sources(model, data.vectors.fused[rows], [data.texts[i] for i in rows], [data.ids[i] for i in rows])
    zero = zero_shot(model, data, rows, encoders)
    return {
        family: {
            **{METHOD_NAMES[name]: scores for name, scores in fs.sources.items()},
            **({ZERO_SHOT: zero[family]} if family in zero else {}),
            "fused": fs.fused,
        }
        for family, fs in scored.items()
    }


def evaluate_model(
    model: TaggerModel,
    data: LabelledSet,
    val_rows: np.ndarray,
    test_rows: np.ndarray,
    target_precision: float,
    encoders: Encoders,
    confidence: float = 0.0,
) -> dict[str, dict]:
    """Per family and method: metrics on the test rows, thresholds and temperatures from the validation rows.
    With `encoders` holding an image tower, zero-shot CLIP is measured beside the other methods."""
    val_scores = _scores_by_method(model, data, val_rows, encoders)
    test_scores = _scores_by_method(model, data, test_rows, encoders)
    results: dict[str, dict] = {}
    for family, fm in model.families.items():
        vocab, multilabel = fm.vocab, fm.vocab.multilabel
        val_tags, test_tags = [data.tags[i] for i in val_rows], [data.tags[i] for i in test_rows]
        val_labels = vocab.label_matrix([t.get(family) for t in val_tags])
        test_labels = vocab.label_matrix([t.get(family) for t in test_tags])
        val_has = labelled_rows(val_labels, val_tags, family, multilabel)
        test_has = labelled_rows(test_labels, test_tags, family, multilabel)
        if not test_has.any() or not val_has.any():
            continue
        y_val_m = np.asarray(val_labels[val_has].todense())
        y_test_m = np.asarray(test_labels[test_has].todense())
        y_val = y_val_m if multilabel else y_val_m.argmax(1)
        y_test = y_test_m if multilabel else y_test_m.argmax(1)
        methods, preds = {}, {}
        for method, scores in test_scores[family].items():
            s_val, s_test = val_scores[family][method][val_has], scores[test_has]
            if method != "fused":  # calibrate the single source the way fusion calibrates its mixture
                t = fit_temperature(s_val, y_val, multilabel)
                s_val, s_test = apply_temperature(s_val, t, multilabel), apply_temperature(s_test, t, multilabel)
            thresholds = choose_thresholds(s_val, y_val, target_precision, confidence=confidence)
            if multilabel:
                pred = (s_test >= 0.5).astype(int)
                metrics = multilabel_metrics(y_test_m, pred)
                confidences, correct = s_test.ravel(), y_test_m.ravel().astype(bool)
            else:
                pred = s_test.argmax(1)
                metrics = classification_metrics(y_test, pred, len(vocab))
                confidences, correct = s_test.max(1), pred == y_test
            metrics["buckets"] = frequency_buckets(y_test_m if multilabel else y_test, pred, np.asarray(vocab.counts))
            metrics.update({f"{k}_at_target": v for k, v in coverage_at_precision(s_test, y_test, thresholds).items()})
            metrics["ece"] = expected_calibration_error(confidences, correct)
            bin_conf, bin_acc, bin_count = reliability_curve(confidences, correct)
            metrics["reliability"] = {
                "confidence": np.nan_to_num(bin_conf).round(4).tolist(),
                "accuracy": np.nan_to_num(bin_acc).round(4).tolist(),
                "count": bin_count.tolist(),
            }
            methods[method] = metrics
            preds[method] = pred
        test_values = [v for i in test_rows for v in data.tags[i].get(family) or ()]
        fused = methods["fused"]
        results[family] = {
            "multilabel": multilabel,
            "classes": len(vocab),
            "classes_with_one_example": int(sum(c == 1 for c in vocab.counts)),
            "test_size": int(test_has.sum()),
            # test tags the vocabulary has never seen: no method can emit them, so they are not scored
            "test_unseen_values": int(sum(vocab.index(v) is None for v in test_values)),
            "target_precision": target_precision,
            **precision_verdict(fused, int(val_has.sum()), target_precision, confidence),
            "weights": fm.weights,
            "methods": methods,
            **({"fused_vs_tfidf": fused_vs_baseline(
                y_test_m if multilabel else y_test, preds["fused"], preds[BASELINE], len(vocab),
                methods["fused"], methods[BASELINE],
            )} if BASELINE in preds else {}),
        }
    return results


def precision_verdict(fused: Mapping[str, float], validation_n: int, target: float, confidence: float) -> dict:
    """What the accepted tags' test precision says: ``met`` / ``missed`` the target; ``too few labels`` when the
    validation products are fewer than the `fewest_to_certify` any threshold needs (nothing can be accepted, and
    a precision of nothing is no number to compare); ``nothing accepted`` when there were enough but no tag was
    accepted on test. `meets_target` is None in the last two cases."""
    emitted, precision = int(fused["n_emitted_at_target"]), fused["precision_at_target"]
    needed = fewest_to_certify(target, confidence)
    if emitted:
        verdict = "met" if precision >= target else "missed"
    elif needed is None or validation_n < needed:
        verdict = "too few labels"
    else:
        verdict = "nothing accepted"
    return {
        "accepted_precision": precision if emitted else None,
        "accepted_tags": emitted,
        "meets_target": verdict == "met" if emitted else None,
        "precision_verdict": verdict,
        "validation_labelled": validation_n,
        "fewest_to_certify": needed,
    }


def fused_vs_baseline(y_test: np.ndarray, fused: np.ndarray, baseline: np.ndarray, n_classes: int,
                      fused_metrics: Mapping, baseline_metrics: Mapping) -> dict:
    """Fused minus the baseline in weighted and macro F1 on the test products, with 95 % paired-bootstrap
    intervals and a verdict each; below `MIN_INTERVAL_PRODUCTS` the differences only (a bootstrap of a
    handful of products says little)."""
    n = len(y_test)
    out: dict = {"products": n, "level": 0.95}
    if n < MIN_INTERVAL_PRODUCTS:
        return out | {name: {"difference": fused_metrics[f"f1_{name}"] - baseline_metrics[f"f1_{name}"], "low": None,
                             "high": None, "verdict": None} for name in ("weighted", "macro")}
    intervals = f1_difference_interval(y_test, fused, baseline, n_classes, level=out["level"])
    return out | {name: d | {"verdict": verdict(d)} for name, d in intervals.items()}


def verdict(d: Mapping[str, float]) -> str:
    """What an interval of a difference says, judged at the 4 decimals it is printed with ("+0.0000 to …" is
    not "better")."""
    low, high = round(d["low"], 4), round(d["high"], 4)
    if low == high == 0:
        return "the same on every test product"
    return "better" if low > 0 else "worse" if high < 0 else "no clear difference (the interval holds 0)"


def unscored_notes(results: Mapping) -> list[str]:
    """Lines on held-out labels no method can be scored on: families the model does not learn, and values of
    a family it never learnt (it cannot emit them)."""
    notes = [f"{family}: not a family the model learns; its labels on {n} held-out product{'s' * (n != 1)} are not scored"
             for family, n in results.get("held_out_unlearnt_families", {}).items()]
    notes += [f"{family}: {n} held-out label value{'s' * (n != 1)} the model never learnt, not scored (no method "
              "can emit them)" for family, n in results.get("held_out_unlearnt_values", {}).items()]
    return notes


def difference_note(family: str, fam: Mapping) -> str | None:
    """One line on fused against TF-IDF + LR with the 95 % paired-bootstrap intervals, or None without the
    baseline: whether each difference is more than chance on these test products."""
    if "fused_vs_tfidf" not in fam:
        return None
    diff = fam["fused_vs_tfidf"]

    def part(name: str) -> str:
        d = diff[name]
        if d["verdict"] is None:
            return f"{name} F1 {d['difference']:+.4f}"
        return f"{name} F1 {d['difference']:+.4f} (95% interval {d['low']:+.4f} to {d['high']:+.4f}: {d['verdict']})"

    n = diff["products"]
    line = f"{family}: fused - {BASELINE} on {n} test product{'s' * (n != 1)}: {part('weighted')}, {part('macro')}"
    if diff["weighted"]["verdict"] is None:
        line += f" (too few test products for an interval: {MIN_INTERVAL_PRODUCTS} are needed)"
    return line


def precision_note(family: str, fam: Mapping, confidence: float) -> str:
    """One line on a family's accepted-tag precision against the target, for people."""
    target, verdict = fam["target_precision"], fam["precision_verdict"]
    if verdict in ("met", "missed"):
        return (f"{family}: accepted tags precision {fam['accepted_precision']:.4f} against target {target} "
                f"({verdict.upper() if verdict == 'missed' else verdict}; {fam['accepted_tags']} tags accepted "
                f"of {fam['test_size']} test products)")
    needs = (f"{fam['fewest_to_certify']} right answers in a row" if fam["fewest_to_certify"] is not None
             else "more than any count")
    if verdict == "too few labels":
        return (f"{family}: too few held-out labels to certify precision {target} (validation n="
                f"{fam['validation_labelled']}, test n={fam['test_size']}; {needs} are needed at {confidence:.0%} "
                "confidence): no tag accepted, every tag goes to review; label more products")
    return (f"{family}: no tag accepted on the {fam['test_size']} test products: on validation (n="
            f"{fam['validation_labelled']}) no threshold reaches precision {target} at {confidence:.0%} confidence, "
            "so every tag goes to review")


def evaluate(
    settings: Settings, store: Store, encoders: Encoders, *, labels: Path | None = None, show_progress: bool = True
) -> dict:
    """Fit on train, tune on validation, measure on test (or on the products of the `labels` file);
    nothing of the workspace's saved model is used."""
    held_out = read_labels(labels) if labels is not None else None
    data = labelled_set(store, encoders, Workspace(settings.workspace), show_progress, held_out)
    t = settings.tagger
    split = split_labelled(data, settings, test_fraction=0.0 if held_out else None)
    masks = dict(split.masks)
    left_out = 0
    if held_out:
        test = np.isin(data.ids, list(held_out))
        near_test = np.isin(split.group, split.group[test]) & ~test  # near-duplicates of a held-out product
        left_out = int(near_test.sum())
        masks = {"train": masks["train"] & ~test & ~near_test, "val": masks["val"] & ~test & ~near_test, "test": test}
    if not masks["test"].any():
        raise BadInput("the test split is empty: set tagger.test_fraction above 0 or label more products")
    model = fit_on(data, masks["train"], masks["val"], settings, encoders)
    results = evaluate_model(
        model, data, np.flatnonzero(masks["val"]), np.flatnonzero(masks["test"]), t.target_precision, encoders,
        t.precision_confidence,
    )
    held = held_out or {}
    return {
        "split": {name: int(mask.sum()) for name, mask in masks.items()},
        # held-out labels no method can be scored on: not scored, and said so (`unscored_notes`)
        "held_out_unlearnt_families": {
            f: sum(f in tags for tags in held.values())
            for f in sorted({f for tags in held.values() for f in tags} - set(model.families))
        },
        "held_out_unlearnt_values": {
            f: n for f, fm in model.families.items()
            if (n := sum(fm.vocab.index(v) is None for tags in held.values() for v in tags.get(f) or ()))
        },
        "split_groups": {
            "kind": "held-out labels" if held_out else "grouped",
            "groups": split.groups,
            "products_in_shared_groups": split.merged_products,
            "groups_joined_by_vectors": split.merged_by_vector,
            "largest_group": split.largest,
            "left_out_near_held_out": left_out,
        },
        "target_precision": t.target_precision,
        "precision_confidence": t.precision_confidence,
        "encoders": model.encoders,
        "families": results,
    }


def bucket_rows(family: Mapping) -> list[tuple[str, dict[str, float]]]:
    """(bucket, {method: macro F1}) rows of one family's long-tail table."""
    names = [m for m, r in family["methods"].items() if "buckets" in r]
    if not names:
        return []
    return [
        (f"{b['bucket']} ({b['classes_present']} cl.)", {m: family["methods"][m]["buckets"][i]["f1_macro"] for m in names})
        for i, b in enumerate(family["methods"][names[0]]["buckets"])
        if b["classes_present"]
    ]


def summary_rows(results: Mapping[str, dict], metric: str = "f1_weighted") -> list[tuple[str, dict[str, float]]]:
    """(family, {method: metric}) rows for a side-by-side table."""
    return [(family, {m: r[metric] for m, r in fam["methods"].items() if metric in r}) for family, fam in results.items()]
