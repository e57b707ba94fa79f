"""Quality metrics and calibration for tag scores: pure functions over numpy arrays.

Conventions, shared by every function here:
- single-label families: ``y_true`` / ``y_pred`` are int class indices of shape (n,); ``-1`` in ``y_pred``
  means "no tag emitted" (needs review): it costs recall, never precision.
- multi-label families: multi-hot (n, C) arrays of 0/1.
- scores are (n, C) arrays, higher = more likely (probabilities after calibration).
- macro averages run over the classes present in ``y_true`` only: a class with no true example in the
  evaluated split has no recall to measure, and averaging its 0 in would punish the split, not the model.
  Its false positives still count in micro precision and in the classes they were confused with.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.stats import bootstrap, norm
from sklearn.metrics import precision_recall_fscore_support

AVERAGES = ("micro", "macro", "weighted")


def _averaged_scores(y_true: np.ndarray, y_pred: np.ndarray, all_labels: np.ndarray, present: np.ndarray) -> dict:
    """precision/recall/F1 for micro (all labels), macro and weighted (labels present in y_true)."""
    out: dict[str, float] = {}
    for average in AVERAGES:
        labels = all_labels if average == "micro" else present
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0.0
        )
        out |= {f"precision_{average}": float(p), f"recall_{average}": float(r), f"f1_{average}": float(f)}
    return out


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy and precision/recall/F1 (micro, macro, weighted) of single-label predictions.

    With every product tagged, micro P = R = F1 = accuracy; abstentions (-1) make micro precision exceed
    recall. ``support`` is the number of products, ``n_classes_present`` the classes in the macro average.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    present = np.unique(y_true)
    return {
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        **_averaged_scores(y_true, y_pred, np.arange(n_classes), present),
        "support": int(len(y_true)),
        "n_classes_present": int(len(present)),
    }


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Subset accuracy and precision/recall/F1 (micro, macro, weighted, samples) of multi-hot predictions.

    Samples averages count a product with no true and no predicted tag as perfect (it was rightly left
    untagged), and a product left untagged as precision 1 (nothing wrong was emitted).
    """
    y_true, y_pred = np.asarray(y_true).astype(int), np.asarray(y_pred).astype(int)
    n_classes = y_true.shape[1]
    present = np.flatnonzero(y_true.sum(axis=0) > 0)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="samples", zero_division=1.0)
    return {
        "accuracy": float(np.mean(np.all(y_true == y_pred, axis=1))) if len(y_true) else 0.0,
        **_averaged_scores(y_true, y_pred, np.arange(n_classes), present),
        "precision_samples": float(p),
        "recall_samples": float(r),
        "f1_samples": float(f),
        "support": int(len(y_true)),
        "n_classes_present": int(len(present)),
    }


def per_class_scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and true support (single-label int arrays or multi-hot arrays)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim == 2:
        y_true, y_pred = y_true.astype(int), y_pred.astype(int)
    p, r, f, s = precision_recall_fscore_support(
        y_true, y_pred, labels=np.arange(n_classes), average=None, zero_division=0.0
    )
    return {"precision": p, "recall": r, "f1": f, "support": s}


def _as_multi_hot(y_true: np.ndarray, n_classes: int) -> np.ndarray:
    """Int labels (n,) as a boolean one-hot (n, C); multi-hot input passes through as booleans."""
    y_true = np.asarray(y_true)
    if y_true.ndim == 2:
        return y_true.astype(bool)
    hot = np.zeros((len(y_true), n_classes), dtype=bool)
    known = y_true >= 0
    hot[np.flatnonzero(known), y_true[known]] = True
    return hot


def emitted_tags(scores: np.ndarray, thresholds: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """Boolean (n, C) mask of the tags emitted under per-class `thresholds`.

    Single-label: the top-scoring class only, when its score reaches its class threshold.
    Multi-label: every class whose score reaches its threshold.
    """
    scores = np.asarray(scores, dtype=float)
    thresholds = np.asarray(thresholds, dtype=float)
    if multilabel:
        return scores >= thresholds[None, :]
    top = scores.argmax(axis=1)
    rows = np.arange(len(scores))
    mask = np.zeros(scores.shape, dtype=bool)
    mask[rows, top] = scores[rows, top] >= thresholds[top]
    return mask


def coverage_at_precision(scores: np.ndarray, y_true: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    """What the per-class thresholds deliver: coverage, precision and recall of the emitted tags.

    `y_true` int labels (n,) selects single-label emission (top class only), multi-hot (n, C) multi-label.
    coverage = share of products that get at least one tag; precision = correct emitted tags / emitted
    tags (single-label: the accuracy among covered products; NaN when nothing is emitted); recall = correct
    emitted tags / true tags (single-label: share of all products tagged correctly without review).
    """
    scores = np.asarray(scores, dtype=float)
    truth = _as_multi_hot(y_true, scores.shape[1])
    emitted = emitted_tags(scores, thresholds, multilabel=np.asarray(y_true).ndim == 2)
    n_emitted, n_correct = int(emitted.sum()), int((emitted & truth).sum())
    return {
        "coverage": float(emitted.any(axis=1).mean()) if len(scores) else 0.0,
        "precision": n_correct / n_emitted if n_emitted else float("nan"),
        "recall": n_correct / int(truth.sum()) if truth.any() else float("nan"),
        "n_covered": int(emitted.any(axis=1).sum()),
        "n_emitted": n_emitted,
    }


def precision_lower_bound(correct: np.ndarray, total: np.ndarray, confidence: float) -> np.ndarray:
    """One-sided Wilson lower bound on precision after `correct` of `total` right: the precision we can claim
    at `confidence` (0: the point estimate). Small counts get a low bound, so 5 of 5 right is not "100 %"."""
    correct, total = np.asarray(correct, dtype=float), np.maximum(np.asarray(total, dtype=float), 1.0)
    p = correct / total
    if confidence <= 0:
        return p
    z = float(norm.ppf(confidence))
    centre = p + z * z / (2 * total)
    spread = z * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return (centre - spread) / (1 + z * z / total)


def fewest_to_certify(target_precision: float, confidence: float) -> int | None:
    """The fewest validation candidates, all of them right, whose `precision_lower_bound` reaches
    `target_precision`: with fewer, no threshold can be certified and every tag goes to review. None when no
    count does (a target of 1 at a confidence above 0). All right, the Wilson bound is n / (n + z²)."""
    if confidence <= 0:
        return 1
    if target_precision >= 1:
        return None
    z2 = float(norm.ppf(confidence)) ** 2
    return max(1, int(np.ceil(target_precision * z2 / (1 - target_precision) - 1e-9)))


def lowest_threshold(
    scores: np.ndarray, correct: np.ndarray, target_precision: float, confidence: float = 0.0
) -> float:
    """The smallest score t such that the candidates scoring >= t are correct at `target_precision` or better
    (with `confidence` > 0: the lower confidence bound of their precision reaches it), +inf when no t does.
    Ties are kept together: a cut never splits equal scores."""
    scores, correct = np.asarray(scores, dtype=float), np.asarray(correct, dtype=bool)
    if len(scores) == 0:
        return float("inf")
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    precision = precision_lower_bound(np.cumsum(correct[order]), np.arange(1, len(ranked) + 1), confidence)
    # a cut after position i is possible only where the next score is strictly lower
    cut_ok = np.append(ranked[1:] < ranked[:-1], True)
    reaching = np.flatnonzero(cut_ok & (precision >= target_precision))
    return float(ranked[reaching[-1]]) if len(reaching) else float("inf")


def choose_thresholds(
    scores_val: np.ndarray, y_val: np.ndarray, target_precision: float, min_support: int = 50, confidence: float = 0.0
) -> np.ndarray:
    """Per-class thresholds that reach `target_precision` on validation, as low as possible (most coverage).

    Candidates for class c are the validation products whose top class is c (single-label, int `y_val`), or
    all products (multi-label, multi-hot `y_val`); a candidate is correct when c is a true tag. A class
    with at least `min_support` candidates (single-label) or true examples (multi-label) gets its own
    `lowest_threshold`, +inf if it cannot reach the target ("needs review" always). Rarer classes are too
    few to judge alone and share one pooled threshold: the lowest one reaching the target on the candidates
    of the rare classes together. With `confidence` > 0 "reaching" means the lower confidence bound of the
    precision does, not the point estimate: the precision of accepted tags then holds on new products
    instead of being met on validation only.
    """
    scores_val = np.asarray(scores_val, dtype=float)
    n, n_classes = scores_val.shape
    truth = _as_multi_hot(y_val, n_classes)
    if np.asarray(y_val).ndim == 2:
        candidate = np.ones((n, n_classes), dtype=bool)
        support = truth.sum(axis=0)
    else:
        candidate = emitted_tags(scores_val, np.full(n_classes, -np.inf))
        support = candidate.sum(axis=0)
    rare = support < min_support
    pooled_cells = candidate & rare[None, :]
    pooled = lowest_threshold(scores_val[pooled_cells], truth[pooled_cells], target_precision, confidence)
    thresholds = np.full(n_classes, pooled)
    for c in np.flatnonzero(~rare):
        rows = candidate[:, c]
        thresholds[c] = lowest_threshold(scores_val[rows, c], truth[rows, c], target_precision, confidence)
    return thresholds


def reliability_curve(
    confidences: np.ndarray, correct: np.ndarray, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean confidence, accuracy and count per equal-width confidence bin on [0, 1] (NaN for empty bins).

    A calibrated scorer has accuracy = confidence in every bin: its curve lies on the diagonal.
    """
    confidences = np.clip(np.asarray(confidences, dtype=float), 0.0, 1.0)
    correct = np.asarray(correct, dtype=float)
    bins = np.minimum((confidences * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_conf = np.bincount(bins, weights=confidences, minlength=n_bins) / count
        bin_acc = np.bincount(bins, weights=correct, minlength=n_bins) / count
    return bin_conf, bin_acc, count


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over the reliability bins."""
    bin_conf, bin_acc, count = reliability_curve(confidences, correct, n_bins)
    used = count > 0
    if not used.any():
        return 0.0
    return float(np.sum(count[used] * np.abs(bin_acc[used] - bin_conf[used])) / count.sum())


def _multi_hot_sparse(y: np.ndarray, n_classes: int) -> sp.csr_matrix:
    """Single-label indices (``-1``: nothing emitted) or a multi-hot array as a sparse (n, C) 0/1 matrix."""
    y = np.asarray(y)
    if y.ndim == 2:
        return sp.csr_matrix(y.astype(np.float64))
    rows = np.flatnonzero(y >= 0)
    return sp.csr_matrix((np.ones(len(rows)), (rows, y[rows])), shape=(len(y), n_classes))


def f1_difference_interval(
    y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_classes: int, *,
    rounds: int = 1000, level: float = 0.95, seed: int = 0,
) -> dict[str, dict[str, float]]:
    """How sure a difference in F1 is: weighted and macro F1 of `pred_a` minus those of `pred_b`, each with
    its `level` percentile interval from a paired bootstrap over products (scipy's `bootstrap`; both
    predictions resampled together, so what they share cancels). An interval that holds 0 is a difference
    the evaluated products cannot tell from chance. Macro F1 of a resample runs over the classes present in it."""
    truth = _multi_hot_sparse(y_true, n_classes)
    a, b = _multi_hot_sparse(pred_a, n_classes), _multi_hot_sparse(pred_b, n_classes)
    right_a, right_b = truth.multiply(a).tocsr(), truth.multiply(b).tocsr()
    n = truth.shape[0]

    def f1s(support: np.ndarray, emitted: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        denominator = support + emitted
        f1 = np.divide(2 * right, denominator, out=np.zeros_like(right), where=denominator > 0)
        present = support > 0
        weighted = (f1 * support).sum(-1) / np.maximum(support.sum(-1), 1)
        macro = (f1 * present).sum(-1) / np.maximum(present.sum(-1), 1)
        return weighted, macro

    def differences(rows: np.ndarray, axis: int = -1) -> np.ndarray:
        rows = np.atleast_2d(rows)  # (resamples, n) product indices
        counts = sp.csr_matrix((np.ones(rows.size), (np.repeat(np.arange(len(rows)), rows.shape[1]), rows.ravel())),
                               shape=(len(rows), n))
        support = (counts @ truth).toarray()
        weighted_a, macro_a = f1s(support, (counts @ a).toarray(), (counts @ right_a).toarray())
        weighted_b, macro_b = f1s(support, (counts @ b).toarray(), (counts @ right_b).toarray())
        return np.stack([weighted_a - weighted_b, macro_a - macro_b])

    point = differences(np.arange(n)[None, :])[:, 0]
    interval = bootstrap((np.arange(n),), differences, vectorized=True, paired=False, n_resamples=rounds,
                         batch=100, confidence_level=level, method="percentile",
                         random_state=np.random.default_rng(seed)).confidence_interval
    return {
        name: {"difference": float(point[i]), "low": float(interval.low[i]), "high": float(interval.high[i])}
        for i, name in enumerate(("weighted", "macro"))
    }


BUCKETS = ((1, 5), (6, 20), (21, 100), (101, None))  # training examples per class


def bucket_name(low: int, high: int | None) -> str:
    return f"{low}-{high}" if high is not None else f"{low - 1}+"


def frequency_buckets(y_true: np.ndarray, y_pred: np.ndarray, train_counts: np.ndarray) -> list[dict]:
    """The long tail in numbers: per bucket of classes by training examples (1-5, 6-20, 21-100, 100+), how
    many classes it has, how many appear in the evaluated set, their test examples and macro P / R / F1 over
    the classes present. Classes never seen in training (count 0) are left out: no model can emit them."""
    train_counts = np.asarray(train_counts)
    per_class = per_class_scores(y_true, y_pred, len(train_counts))
    present = per_class["support"] > 0
    out = []
    for low, high in BUCKETS:
        in_bucket = (train_counts >= low) & (train_counts <= (high if high is not None else np.inf))
        scored = in_bucket & present
        out.append({
            "bucket": bucket_name(low, high),
            "classes": int(in_bucket.sum()),
            "classes_present": int(scored.sum()),
            "support": int(per_class["support"][scored].sum()),
            **{f"{k}_macro": float(per_class[k][scored].mean()) if scored.any() else float("nan")
               for k in ("precision", "recall", "f1")},
        })
    return out


def evaluate_scores(
    scores_val: np.ndarray,
    y_val: np.ndarray,
    scores_test: np.ndarray,
    y_test: np.ndarray,
    target_precision: float,
    n_bins: int = 10,
) -> dict:
    """Everything a report shows for one scorer on one family, the same way for every method.

    Predictions: the top class (single-label, int `y`) or every tag with score >= 0.5 (multi-label,
    multi-hot `y`). Thresholds for `target_precision` are chosen on validation and applied to test.
    Reliability and ECE use the top tag's score as confidence. Returns ``metrics`` (flat floats),
    ``reliability`` (bin_conf, bin_acc, bin_count lists) and ``per_class_f1`` (list, class order; NaN for
    a class with no test example, whose F1 says nothing).
    """
    scores_test = np.asarray(scores_test, dtype=float)
    n_classes = scores_test.shape[1]
    multilabel = np.asarray(y_test).ndim == 2
    top = scores_test.argmax(axis=1)
    truth = _as_multi_hot(y_test, n_classes)
    correct = truth[np.arange(len(top)), top]
    if multilabel:
        y_pred = (scores_test >= 0.5).astype(int)
        metrics = multilabel_metrics(y_test, y_pred)
    else:
        y_pred = top
        metrics = classification_metrics(y_test, y_pred, n_classes)
    at_target = coverage_at_precision(scores_test, y_test, choose_thresholds(scores_val, y_val, target_precision))
    confidence = scores_test.max(axis=1)
    bins = reliability_curve(confidence, correct, n_bins)
    per_class = per_class_scores(y_test, y_pred, n_classes)
    return {
        "metrics": {
            **metrics,
            **{f"{k}_at_target": v for k, v in at_target.items()},
            "ece": expected_calibration_error(confidence, correct, n_bins),
        },
        "reliability": {k: v.tolist() for k, v in zip(("bin_conf", "bin_acc", "bin_count"), bins)},
        "per_class_f1": np.where(per_class["support"] > 0, per_class["f1"], np.nan).tolist(),
    }
