"""Stage: held-out evaluation. Fit on the train split, tune on validation, measure on test, every method on
the same split: the TF-IDF + logistic regression baseline (the lexical source alone), kNN only, head only,
zero-shot CLIP (when an image tower is configured) and the fused tagger; coverage at the target precision
uses thresholds chosen on validation per method.

`for_modality` turns one configuration into its text-only, image-only and text+image variants, so the
three can be compared on the same split."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

from shoptag.store.records import Store
from shoptag.tagger.fuse import apply_temperature, fit_temperature
from shoptag.tagger.metrics import (
    choose_thresholds,
    classification_metrics,
    coverage_at_precision,
    expected_calibration_error,
    multilabel_metrics,
    reliability_curve,
)
from shoptag.core.settings import Settings
from shoptag.tagger.model import TaggerModel, score_sources
from shoptag.tagger.split import split_mask

from .encode import Encoders
from .train import LabelledSet, fit_on, labelled_set
from .workspace import Workspace

METHOD_NAMES = {"lexical": "tfidf-lr", "knn": "knn", "head": "head", "fused": "fused"}
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
        raise ValueError(f"modality {modality!r} needs an image tower: set encoders.image_model")
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
) -> dict[str, dict]:
    """Per family and method: metrics on the test rows, thresholds and temperatures from the validation rows.
    With `encoders` holding an image tower, zero-shot CLIP is measured beside the other methods."""
    val_scores = _scores_by_method(model, data, val_rows, encoders)
    test_scores = _scores_by_method(model, data, test_rows, encoders)
    results: dict[str, dict] = {}
    for family, fm in model.families.items():
        vocab, multilabel = fm.vocab, fm.vocab.multilabel
        val_labels = vocab.label_matrix([data.tags[i].get(family) for i in val_rows])
        test_labels = vocab.label_matrix([data.tags[i].get(family) for i in test_rows])
        val_has = np.asarray(val_labels.sum(1)).ravel() > 0
        test_has = np.asarray(test_labels.sum(1)).ravel() > 0
        if not test_has.any() or not val_has.any():
            continue
        y_val_m = np.asarray(val_labels[val_has].todense())
        y_test_m = np.asarray(test_labels[test_has].todense())
        y_val = y_val_m if multilabel else y_val_m.argmax(1)
        y_test = y_test_m if multilabel else y_test_m.argmax(1)
        methods = {}
        for method, scores in test_scores[family].items():
            s_val, s_test = val_scores[family][method][val_has], scores[test_has]
            if method != "fused":  # calibrate the single source the way fusion calibrates its mixture
                t = fit_temperature(s_val, y_val, multilabel)
                s_val, s_test = apply_temperature(s_val, t, multilabel), apply_temperature(s_test, t, multilabel)
            thresholds = choose_thresholds(s_val, y_val, target_precision)
            if multilabel:
                metrics = multilabel_metrics(y_test_m, (s_test >= 0.5).astype(int))
                confidences, correct = s_test.ravel(), y_test_m.ravel().astype(bool)
            else:
                pred = s_test.argmax(1)
                metrics = classification_metrics(y_test, pred, len(vocab))
                confidences, correct = s_test.max(1), pred == y_test
            metrics.update({f"{k}_at_target": v for k, v in coverage_at_precision(s_test, y_test, thresholds).items()})
            metrics["ece"] = expected_calibration_error(confidences, correct)
            bin_conf, bin_acc, bin_count = reliability_curve(confidences, correct)
            metrics["reliability"] = {
                "confidence": np.nan_to_num(bin_conf).round(4).tolist(),
                "accuracy": np.nan_to_num(bin_acc).round(4).tolist(),
                "count": bin_count.tolist(),
            }
            methods[method] = metrics
        results[family] = {
            "multilabel": multilabel,
            "classes": len(vocab),
            "test_size": int(test_has.sum()),
            "weights": fm.weights,
            "methods": methods,
        }
    return results


def evaluate(settings: Settings, store: Store, encoders: Encoders, *, show_progress: bool = True) -> dict:
    """Fit on train, tune on validation, measure on test; nothing of the workspace's saved model is used."""
    data = labelled_set(store, encoders, Workspace(settings.workspace), show_progress)
    t = settings.tagger
    masks = split_mask(data.ids, t.validation_fraction, t.test_fraction)
    if not masks["test"].any():
        raise ValueError("the test split is empty: set tagger.test_fraction above 0 or label more products")
    model = fit_on(data, masks["train"], masks["val"], settings, encoders)
    results = evaluate_model(
        model, data, np.flatnonzero(masks["val"]), np.flatnonzero(masks["test"]), t.target_precision, encoders
    )
    return {
        "split": {name: int(mask.sum()) for name, mask in masks.items()},
        "target_precision": t.target_precision,
        "encoders": model.encoders,
        "families": results,
    }


def summary_rows(results: Mapping[str, dict], metric: str = "f1_weighted") -> list[tuple[str, dict[str, float]]]:
    """(family, {method: metric}) rows for a side-by-side table."""
    return [(family, {m: r[metric] for m, r in fam["methods"].items() if metric in r}) for family, fam in results.items()]
