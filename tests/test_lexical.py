"""Lexical TF-IDF + logistic regression scores on real English and Chinese titles."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from pathlib import Path

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.utils.class_weight import compute_sample_weight

from shoptag.tagger.lexical import LexicalClassifier, load_counts, normalize, save_counts, shared_counts, tokenize
from shoptag.tagger.metrics import classification_metrics, multilabel_metrics
from shoptag.tagger.split import split_mask


def _index(values: list[str]) -> dict[str, int]:
    return {v: i for i, v in enumerate(sorted(set(values)))}


def test_tokenize_mixed_chinese_and_english() -> None:
    tokens = tokenize(normalize("Nike耐克男士跑步鞋ＡＩＲ 2019款"))
    assert tokens[0] == "nike" and "air" in tokens and "2019" in tokens  # full-width letters folded by NFKC
    assert "耐克" in tokens and "跑步鞋" in "".join(tokens)
    assert all(t.strip() for t in tokens)


def test_article_type_far_above_majority_on_fashion_slice(fashion_slice) -> None:
    ids, titles, tags = fashion_slice.family("articleType")
    index = _index([t[0] for t in tags])
    y = np.array([index[t[0]] for t in tags])
    masks = split_mask(ids, 0.15, 0.15)
    train, test = np.flatnonzero(masks["train"]), np.flatnonzero(~masks["train"])
    model = LexicalClassifier().fit([titles[i] for i in train], y[train], n_classes=len(index))
    proba = model.predict_proba([titles[i] for i in test])
    assert proba.shape == (len(test), len(index))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    accuracy = classification_metrics(y[test], proba.argmax(axis=1), len(index))["accuracy"]
    majority = np.mean(y[test] == np.bincount(y[train]).argmax())
    assert majority < 0.3
    assert accuracy > majority + 0.5


def test_product_type_learnt_from_chinese_titles(taobao_slice, caplog) -> None:
    rows = [row for row in zip(*taobao_slice.family("product_type")) if row[2]]  # titles with a product type
    ids, titles, tags = (list(column) for column in zip(*rows))
    train = split_mask(ids, 0.15, 0.15)["train"]
    # the vocabulary rule of the tagger: tags seen at least twice in training
    seen = Counter(v for values, is_train in zip(tags, train) if is_train for v in values)
    index = _index([v for v, n in seen.items() if n >= 2])
    y = np.zeros((len(titles), len(index) + 1), dtype=int)  # + one tag no training title carries
    for row, values in enumerate(tags):
        y[row, [index[v] for v in values if v in index]] = 1
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO, logger="shoptag.tagger"):
        warnings.simplefilter("always")
        model = LexicalClassifier().fit([t for t, m in zip(titles, train) if m], y[train], len(index) + 1, multilabel=True)
    # a fit that stops at LIBLINEAR's iteration limit is one line in the log at most, never a warning that a
    # user would see and could do nothing about
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    summary = [r.getMessage() for r in caplog.records if "tag fits stopped at the iteration limit" in r.getMessage()]
    assert len(summary) <= 1
    proba = model.predict_proba([t for t, m in zip(titles, train) if not m])
    assert proba.shape == (int((~train).sum()), len(index) + 1)
    assert np.all(proba[:, -1] == 0)  # a tag never seen in training scores 0
    f1 = multilabel_metrics(y[~train], (proba >= 0.3).astype(int))["f1_micro"]
    assert f1 > 0.3


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # the near-exact reference's
@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_working_set_fit_solves_the_problem_on_all_ngrams(taobao_slice, class_weight) -> None:
    """Each tag is fitted on a working set of n-gram columns: its solution must be the L1 logistic regression on
    all columns (the objective LIBLINEAR minimises, to its tolerance), with every left-out weight provably zero."""
    rows = [row for row in zip(*taobao_slice.family("product_type")) if row[2]][:800]
    titles = [title for _, title, _ in rows]
    counts = Counter(v for _, _, values in rows for v in values)
    tags = [v for v, n in counts.most_common() if n >= 2][::7][:12]  # frequent to rare
    y = np.array([[v in values for v in tags] for _, _, values in rows], dtype=int)
    model = LexicalClassifier(class_weight=class_weight, n_jobs=1).fit(titles, y, len(tags), multilabel=True)
    x = sp.csr_matrix(model._features.transform(titles))
    C = model.C
    for j in range(len(tags)):
        weight = C * (compute_sample_weight(class_weight, y[:, j]) if class_weight else np.ones(len(y)))
        ours = (model._model.coef[:, j].toarray().ravel(), float(model._model.intercept[j]))
        full = LogisticRegression(l1_ratio=1.0, C=C, class_weight=class_weight, solver="liblinear", tol=1e-6,
                                  max_iter=10_000, random_state=0).fit(x, y[:, j])
        reference = (full.coef_.ravel(), float(full.intercept_[0]))

        def objective(w: np.ndarray, b: float) -> float:  # LIBLINEAR's: the intercept is penalised too
            margin = (2 * y[:, j] - 1) * (x @ w + b)
            return np.abs(w).sum() + abs(b) + float(weight @ np.logaddexp(0, -margin))

        assert objective(*ours) <= objective(*reference) * (1 + 1e-3), tags[j]
        gradient = np.abs(x.T @ (weight * (expit(x @ ours[0] + ours[1]) - y[:, j])))
        assert gradient[ours[0] == 0].max() <= 1.0 + 2e-2, tags[j]  # a zero weight stays zero on all columns


def test_absent_class_columns_are_zero_and_save_load_is_exact(tmp_path: Path) -> None:
    titles = ["red cotton shirt", "blue denim jeans", "red silk shirt", "black denim jeans", "white shirt"]
    y = np.array([0, 3, 0, 3, 0])  # classes 1, 2 and 4 have no training example
    model = LexicalClassifier().fit(titles, y, n_classes=5)
    queries = ["green shirt", "grey jeans", "好看的衬衫"]
    proba = model.predict_proba(queries)
    assert proba.shape == (3, 5)
    assert np.all(proba[:, [1, 2, 4]] == 0)
    assert proba[0].argmax() == 0 and proba[1].argmax() == 3
    counts = shared_counts(titles + queries)
    model.share(counts)
    path = model.save(tmp_path / "deep" / "lexical.npz")
    save_counts(counts, tmp_path / "deep" / "text.json")
    assert sorted(p.name for p in path.parent.iterdir()) == ["lexical.npz", "text.json"]  # no temporary file left
    loaded, loaded_counts = LexicalClassifier.load(path), load_counts(tmp_path / "deep" / "text.json")
    np.testing.assert_array_equal(loaded.predict_counts(loaded_counts.transform(queries)), proba)
    multi = LexicalClassifier().fit(titles, np.eye(5)[[0, 3, 0, 3, 1]] + np.eye(5)[[1, 1, 2, 2, 2]], 5, multilabel=True)
    expected = multi.predict_proba(queries)
    multi.share(counts)
    loaded = LexicalClassifier.load(multi.save(tmp_path / "multi.npz"))
    np.testing.assert_array_equal(loaded.predict_counts(loaded_counts.transform(queries)), expected)


def test_one_class_and_constant_tags_need_no_model() -> None:
    single = LexicalClassifier().fit(["a shirt", "another shirt"], np.array([2, 2]), n_classes=3)
    np.testing.assert_array_equal(single.predict_proba(["jeans"]), [[0, 0, 1]])
    y = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 0]])  # tag 0 on every product, tag 2 on none
    multi = LexicalClassifier().fit(["a b", "c d", "a e"], y, n_classes=3, multilabel=True)
    proba = multi.predict_proba(["a", "zz"])
    np.testing.assert_array_equal(proba[:, 0], 1.0)
    np.testing.assert_array_equal(proba[:, 2], 0.0)
    assert proba[0, 1] > proba[1, 1]


def test_unfitted_and_wrong_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="before fit"):
        LexicalClassifier().predict_proba(["x"])
    marker = tmp_path / "ran"
    joblib.dump(_Touch(marker), tmp_path / "x.npz")  # a pickle that would run code when loaded
    with pytest.raises(ValueError, match="pickle"):
        LexicalClassifier.load(tmp_path / "x.npz")
    assert not marker.exists(), "a pickled file was unpickled"


class _Touch:
    """Unpickling this creates a file: proof that something loaded a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))
