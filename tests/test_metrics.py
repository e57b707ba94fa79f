"""Metrics and calibration: hand-checked small cases, sklearn agreement, and synthetic calibrated scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from shoptag.tagger.metrics import (
    choose_thresholds,
    classification_metrics,
    coverage_at_precision,
    emitted_tags,
    evaluate_scores,
    expected_calibration_error,
    f1_difference_interval,
    fewest_to_certify,
    frequency_buckets,
    lowest_threshold,
    multilabel_metrics,
    per_class_scores,
    precision_lower_bound,
    reliability_curve,
)
from sklearn.metrics import f1_score


def test_classification_metrics_hand_checked() -> None:
    # class 0: tp 2 fp 1 fn 0 -> P 2/3 R 1 F1 0.8; class 1: tp 1 fp 0 fn 1 -> P 1 R 1/2 F1 2/3; class 2 absent
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 0, 0, 1])
    m = classification_metrics(y_true, y_pred, n_classes=3)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["f1_micro"] == pytest.approx(0.75)
    assert m["f1_macro"] == pytest.approx((0.8 + 2 / 3) / 2)  # class 2 has no true example: not averaged
    assert m["f1_weighted"] == pytest.approx((0.8 * 2 + 2 / 3 * 2) / 4)
    assert m["support"] == 4 and m["n_classes_present"] == 2


def test_abstention_costs_recall_not_precision() -> None:
    m = classification_metrics(np.array([0, 1, 1, 0]), np.array([0, 1, -1, -1]), n_classes=2)
    assert m["precision_micro"] == pytest.approx(1.0)
    assert m["recall_micro"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(0.5)


def test_single_label_agrees_with_sklearn() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 12, 500)
    y_pred = np.where(rng.random(500) < 0.6, y_true, rng.integers(0, 12, 500))
    m = classification_metrics(y_true, y_pred, n_classes=12)
    for average in ("micro", "macro", "weighted"):
        assert m[f"f1_{average}"] == pytest.approx(f1_score(y_true, y_pred, average=average))


def test_multilabel_agrees_with_sklearn_and_subset_accuracy() -> None:
    rng = np.random.default_rng(1)
    y_true = (rng.random((300, 8)) < 0.3).astype(int)
    y_true[:, 7] = 0  # a class without true examples: left out of the macro average
    y_pred = np.where(rng.random((300, 8)) < 0.8, y_true, 1 - y_true)
    m = multilabel_metrics(y_true, y_pred)
    assert m["f1_micro"] == pytest.approx(f1_score(y_true, y_pred, average="micro"))
    assert m["f1_weighted"] == pytest.approx(f1_score(y_true, y_pred, average="weighted", zero_division=0))
    assert m["f1_macro"] == pytest.approx(f1_score(y_true[:, :7], y_pred[:, :7], average="macro", zero_division=0))
    assert m["accuracy"] == pytest.approx(np.mean(np.all(y_true == y_pred, axis=1)))
    assert m["n_classes_present"] == 7


def test_multilabel_untagged_product_rightly_untagged_is_perfect() -> None:
    y_true = np.array([[1, 0], [0, 0]])
    m = multilabel_metrics(y_true, y_true.copy())
    assert m["f1_samples"] == pytest.approx(1.0) and m["accuracy"] == pytest.approx(1.0)


def test_per_class_scores_support_and_f1() -> None:
    s = per_class_scores(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]), n_classes=3)
    np.testing.assert_array_equal(s["support"], [2, 2, 0])
    np.testing.assert_allclose(s["f1"], [0.8, 2 / 3, 0.0])


def test_coverage_at_precision_single_label() -> None:
    scores = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55]])
    y_true = np.array([0, 1, 1, 0])
    # class 0 emitted from 0.7 (row 0 only), class 1 from 0.5 (rows 2 and 3; row 3 wrong)
    m = coverage_at_precision(scores, y_true, np.array([0.7, 0.5]))
    assert m["coverage"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(0.5)
    assert m["n_covered"] == 3


def test_coverage_at_precision_multilabel_emits_every_class_over_threshold() -> None:
    scores = np.array([[0.9, 0.8], [0.1, 0.2]])
    y_true = np.array([[1, 0], [0, 1]])
    m = coverage_at_precision(scores, y_true, np.array([0.5, 0.5]))
    assert m["coverage"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)


def test_nothing_emitted_has_nan_precision() -> None:
    m = coverage_at_precision(np.array([[0.6, 0.4]]), np.array([0]), np.array([np.inf, np.inf]))
    assert m["coverage"] == 0.0 and np.isnan(m["precision"])


def test_lowest_threshold_never_splits_ties() -> None:
    scores = np.array([0.9, 0.8, 0.8, 0.7])
    correct = np.array([True, True, False, True])
    assert lowest_threshold(scores, correct, 1.0) == pytest.approx(0.9)  # 0.8 would take a wrong tie
    assert lowest_threshold(scores, correct, 0.75) == pytest.approx(0.7)
    assert lowest_threshold(scores, np.zeros(4, dtype=bool), 0.5) == np.inf


def _noisy_scores(rng: np.random.Generator, n: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax scores where a larger margin means a more likely correct top class."""
    y = rng.integers(0, n_classes, n)
    logits = rng.normal(0, 1.5, (n, n_classes))
    logits[np.arange(n), y] += rng.normal(1.5, 1.5, n)
    return softmax(logits, axis=1), y


def test_thresholds_reach_target_precision_on_validation() -> None:
    scores, y = _noisy_scores(np.random.default_rng(2), 4000, 5)
    assert np.mean(scores.argmax(1) == y) < 0.8  # untouched, the scorer is far below the target
    thresholds = choose_thresholds(scores, y, target_precision=0.9, min_support=20)
    assert np.all(np.isfinite(thresholds))
    m = coverage_at_precision(scores, y, thresholds)
    assert m["precision"] >= 0.9
    assert 0.05 < m["coverage"] < 1.0
    for c in range(5):  # every class on its own, too
        emitted = emitted_tags(scores, thresholds)[:, c]
        assert np.mean(y[emitted] == c) >= 0.9


def test_rare_classes_share_the_pooled_threshold_and_hopeless_ones_get_inf() -> None:
    scores, y = _noisy_scores(np.random.default_rng(3), 2000, 3)
    scores = np.hstack([scores * 0.9, np.zeros((2000, 2))])
    # class 3: top class of 5 products, too few to judge alone; class 4: 100 top-class products, all wrong
    scores[:5, 3] = 0.95
    scores[5:105, 4] = 0.99
    y[5:105] = 0
    thresholds = choose_thresholds(scores, y, target_precision=0.9, min_support=20)
    candidates = emitted_tags(scores, np.full(5, -np.inf))
    candidates[:, :3] = False  # the pool is the rare classes' candidates only
    pooled = lowest_threshold(scores[candidates], np.eye(5, dtype=bool)[y][candidates], 0.9)
    assert thresholds[3] == pytest.approx(pooled)
    assert thresholds[4] == np.inf


def test_a_few_right_answers_do_not_prove_the_target_with_a_confidence_bound():
    assert precision_lower_bound(5, 5, 0.0) == 1.0
    assert precision_lower_bound(5, 5, 0.95) < 0.7  # 5 of 5 right: not evidence of 90 %
    assert precision_lower_bound(300, 300, 0.95) > 0.99
    scores, correct = np.linspace(1, 0.5, 10), np.ones(10, dtype=bool)
    assert lowest_threshold(scores, correct, 0.9) == pytest.approx(0.5)
    assert lowest_threshold(scores, correct, 0.9, confidence=0.95) == np.inf


@pytest.mark.parametrize("target, confidence", [(0.9, 0.95), (0.8, 0.95), (0.95, 0.99), (0.9, 0.8)])
def test_fewest_to_certify_is_the_count_where_all_right_first_reaches_the_target(target, confidence):
    n = fewest_to_certify(target, confidence)
    assert precision_lower_bound(n, n, confidence) >= target > precision_lower_bound(n - 1, n - 1, confidence)
    scores = np.linspace(1, 0.5, n)
    assert lowest_threshold(scores, np.ones(n, bool), target, confidence) == pytest.approx(0.5)
    assert lowest_threshold(scores[1:], np.ones(n - 1, bool), target, confidence) == np.inf


def test_fewest_to_certify_edge_cases():
    assert fewest_to_certify(0.9, 0.95) == 25  # the figure the docs and messages quote
    assert fewest_to_certify(0.9, 0.0) == 1  # the point estimate: one right answer is 100 %
    assert fewest_to_certify(1.0, 0.95) is None  # no count of right answers bounds precision at 1


def test_coverage_counts_emitted_tags():
    scores = np.array([[0.9, 0.8, 0.1], [0.2, 0.3, 0.1]])
    m = coverage_at_precision(scores, np.array([[1, 0, 0], [0, 1, 0]]), np.array([0.5, 0.5, 0.5]))
    assert m["n_emitted"] == 2 and m["n_covered"] == 1 and m["precision"] == pytest.approx(0.5)
    nothing = coverage_at_precision(scores, np.array([0, 1]), np.full(3, np.inf))
    assert nothing["n_emitted"] == 0 and np.isnan(nothing["precision"])


def test_bounded_thresholds_hold_the_target_on_new_data_where_point_estimates_do_not():
    """Many classes with 60-100 validation candidates each: the lowest cut whose point precision reaches 0.9
    is chosen where validation got lucky, so on new products the accepted tags fall short of 0.9; the
    lower bound leaves a margin that holds."""
    def scores(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 20, n)
        logits = rng.normal(0, 1.5, (n, 20))
        logits[np.arange(n), y] += rng.normal(3.0, 1.5, n)
        return softmax(logits, axis=1), y

    val_scores, y_val = scores(11, 3000)  # 20 classes, ~150 validation candidates each
    test_scores, y_test = scores(12, 50000)
    achieved = {}
    for confidence in (0.0, 0.95):
        thresholds = choose_thresholds(val_scores, y_val, 0.9, min_support=50, confidence=confidence)
        achieved[confidence] = coverage_at_precision(test_scores, y_test, thresholds)
    assert achieved[0.0]["precision"] < 0.9 <= achieved[0.95]["precision"], achieved
    assert achieved[0.95]["coverage"] > 0.05


def test_frequency_buckets_split_macro_f1_by_training_examples():
    counts = np.array([500, 50, 10, 3, 1])
    y_true = np.array([0, 0, 1, 1, 2, 2, 3, 4])
    y_pred = np.array([0, 0, 1, 0, 2, 1, 0, 4])
    buckets = {b["bucket"]: b for b in frequency_buckets(y_true, y_pred, counts)}
    assert list(buckets) == ["1-5", "6-20", "21-100", "100+"]
    assert buckets["1-5"]["classes"] == 2 and buckets["1-5"]["support"] == 2
    assert buckets["1-5"]["f1_macro"] == pytest.approx(0.5)  # class 4 right, class 3 wrong
    assert buckets["100+"]["classes_present"] == 1 and buckets["21-100"]["support"] == 2


def test_multilabel_thresholds_reach_target() -> None:
    rng = np.random.default_rng(4)
    y = (rng.random((3000, 4)) < 0.3).astype(int)
    scores = np.clip(0.35 * y + rng.normal(0.4, 0.2, y.shape), 0, 1)
    thresholds = choose_thresholds(scores, y, target_precision=0.9, min_support=20)
    m = coverage_at_precision(scores, y, thresholds)
    assert m["precision"] >= 0.9 and m["coverage"] > 0.05


def test_reliability_curve_of_calibrated_scores_is_near_the_diagonal() -> None:
    rng = np.random.default_rng(5)
    confidence = rng.random(50_000)
    correct = rng.random(50_000) < confidence  # right exactly as often as claimed
    bin_conf, bin_acc, count = reliability_curve(confidence, correct, n_bins=10)
    assert count.sum() == 50_000
    np.testing.assert_allclose(bin_acc, bin_conf, atol=0.02)
    assert expected_calibration_error(confidence, correct) < 0.01
    overconfident = rng.random(50_000) < confidence * 0.7
    assert expected_calibration_error(confidence, overconfident) > 0.1


def test_empty_reliability_bins_are_nan() -> None:
    bin_conf, bin_acc, count = reliability_curve(np.array([0.05, 0.95, 1.0]), np.array([0, 1, 1]), n_bins=10)
    np.testing.assert_array_equal(count, [1, 0, 0, 0, 0, 0, 0, 0, 0, 2])
    assert np.isnan(bin_acc[1]) and bin_acc[9] == 1.0


def test_evaluate_scores_single_and_multi_label() -> None:
    scores, y = _noisy_scores(np.random.default_rng(7), 3000, 4)
    report = evaluate_scores(scores[:1500], y[:1500], scores[1500:], y[1500:], target_precision=0.9)
    m = report["metrics"]
    assert m["accuracy"] == pytest.approx(np.mean(scores[1500:].argmax(1) == y[1500:]))
    assert 0 < m["coverage_at_target"] < 1 and m["precision_at_target"] > 0.8  # near the target on held-out data
    assert sum(report["reliability"]["bin_count"]) == 1500 and len(report["per_class_f1"]) == 4
    report = evaluate_scores(scores, y, scores[y < 3], y[y < 3], target_precision=0.9)
    assert np.isnan(report["per_class_f1"][3]) and not np.isnan(report["per_class_f1"][2])
    multi = (np.random.default_rng(8).random((200, 3)) < 0.4).astype(int)
    report = evaluate_scores(multi * 0.8 + 0.1, multi, multi * 0.8 + 0.1, multi, target_precision=0.9)
    assert report["metrics"]["f1_samples"] == pytest.approx(1.0) and report["metrics"]["ece"] < 0.2


def test_f1_difference_interval_point_is_the_metrics_difference_and_holds_zero_for_equal_predictions():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 12, 2000)
    a = np.where(rng.random(2000) < 0.8, y, rng.integers(0, 12, 2000))
    b = np.where(rng.random(2000) < 0.8, y, rng.integers(0, 12, 2000))
    diff = f1_difference_interval(y, a, b, 15, rounds=300)
    ma, mb = classification_metrics(y, a, 15), classification_metrics(y, b, 15)
    assert diff["weighted"]["difference"] == pytest.approx(ma["f1_weighted"] - mb["f1_weighted"])
    assert diff["macro"]["difference"] == pytest.approx(ma["f1_macro"] - mb["f1_macro"])
    for d in diff.values():  # two equally good predictors: chance decides the sign
        assert d["low"] < 0 < d["high"]
    same = f1_difference_interval(y, a, a, 15, rounds=100)
    assert all(d == {"difference": 0.0, "low": 0.0, "high": 0.0} for d in same.values())


def test_f1_difference_interval_separates_a_clearly_better_predictor_single_and_multi_label():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 8, 3000)
    good = np.where(rng.random(3000) < 0.9, y, -1)  # abstentions cost recall
    poor = np.where(rng.random(3000) < 0.7, y, rng.integers(0, 8, 3000))
    diff = f1_difference_interval(y, good, poor, 8, rounds=300)
    assert diff["weighted"]["low"] > 0 and diff["macro"]["low"] > 0
    truth = (rng.random((800, 40)) < 0.05).astype(int)
    noisy = truth ^ (rng.random(truth.shape) < 0.03)
    multi = f1_difference_interval(truth, noisy, truth, 40, rounds=300)  # worse than perfect
    assert multi["weighted"]["high"] < 0 and multi["macro"]["high"] < 0
    ma = multilabel_metrics(truth, noisy)
    assert multi["weighted"]["difference"] == pytest.approx(ma["f1_weighted"] - 1.0)
