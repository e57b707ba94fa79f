"""Lexical tag scores: TF-IDF over word and character n-grams with logistic regression.

It is the strong baseline on product titles (brand names, model numbers and exact category words are
lexical evidence that sentence embeddings blur), and the tagger fuses it as a third score source beside
kNN propagation and the classifier head. Titles may be Chinese, English or mixed: CJK runs are cut into
words by jieba, other text by word characters, and character 2-4-grams (``char_wb``) back both up.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
import warnings
from pathlib import Path

import jieba
import numpy as np
import scipy.sparse as sp
from joblib import Parallel, delayed
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfTransformer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

from shoptag.core.files import atomic_write

from .text_features import PARTS, FamilyColumns, TextCounts

log = logging.getLogger("shoptag.tagger")

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_OR_WORD = re.compile(f"([{_CJK}]+)|([^\\W{_CJK}]+)")  # a CJK run, or a run of other word characters


def normalize(text: str) -> str:
    """NFKC (full-width letters and digits become ASCII) and lowercase."""
    return unicodedata.normalize("NFKC", text).lower()


def tokenize(text: str) -> list[str]:
    """Words of normalised text: jieba words inside CJK runs, ``\\w+`` runs elsewhere."""
    tokens: list[str] = []
    for cjk, word in _CJK_OR_WORD.findall(text):
        if cjk:
            tokens.extend(t for t in jieba.lcut(cjk, HMM=True) if t.strip())
        else:
            tokens.append(word)
    return tokens


def _vectorizer(min_df: int) -> FeatureUnion:
    """Word 1-2-grams + char_wb 2-4-grams, each sublinear TF-IDF, L2-normalised, float32."""
    common = {
        "preprocessor": normalize,
        "lowercase": False,
        "sublinear_tf": True,
        "min_df": min_df,
        "dtype": np.float32,
    }
    return FeatureUnion(
        [
            ("word", TfidfVectorizer(tokenizer=tokenize, token_pattern=None, ngram_range=(1, 2), **common)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), **common)),
        ]
    )


def shared_counts(texts: list[str]) -> TextCounts:
    """Counts every lexical classifier of a model can `share`: the union vocabulary of `texts` (a superset
    of each classifier's training titles)."""
    return TextCounts(_vectorizer(min_df=1)).fit(texts)


# The working-set fit of one tag: n-gram columns it starts from, most to add per round, and the slack on the
# optimality check (LIBLINEAR's own solutions are this approximate).
_START_COLUMNS = 256
_ADD_COLUMNS = 1000
_KKT_SLACK = 1e-2


def _fit_l1_tag(
    x: sp.csc_matrix, y: np.ndarray, C: float, class_weight: str | None
) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """One tag's L1 logistic regression over all n-gram columns of `x`, solved on a working set of columns.

    Titles have ~150k n-gram columns and a rare tag's solution uses a few dozen, yet LIBLINEAR's L1 solver
    sweeps every column each iteration (1.4 s per tag on 2,000 Chinese titles). So: fit the n-grams of the
    tag's own titles plus those with the largest gradient at the intercept-only model, then check the
    optimality condition on every left-out column (|C * gradient| <= 1 keeps a weight at zero); add the
    violators and refit until none is left. The result solves the same problem as a fit on all columns
    (same objective, to LIBLINEAR's tolerance), 60 to 90 times faster per tag on those titles.

    Returns (nonzero columns, their weights, intercept, whether the last fit stopped at the iteration limit)."""
    weight = compute_sample_weight(class_weight, y) * C if class_weight else np.full(len(y), C)
    positives = np.flatnonzero(y)
    start = np.abs(x.T @ (weight * (np.average(y, weights=weight) - y)))
    columns = np.union1d(
        _row_columns(x, positives),
        np.argpartition(-start, min(_START_COLUMNS, len(start) - 1))[:_START_COLUMNS],
    )
    while True:
        model = LogisticRegression(
            l1_ratio=1.0, C=C, class_weight=class_weight, solver="liblinear", tol=1e-4, random_state=0
        )
        subset = x[:, columns]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(subset, y)
        coef, intercept = model.coef_.ravel(), float(model.intercept_[0])
        residual = expit(subset @ coef + intercept) - y
        gradient = np.abs(x.T @ (weight * residual))
        gradient[columns] = 0.0
        violators = np.flatnonzero(gradient > 1.0 + _KKT_SLACK)
        if not len(violators):
            stopped = any(issubclass(w.category, ConvergenceWarning) for w in caught)
            keep = np.flatnonzero(coef)
            return columns[keep], coef[keep].astype(np.float32), intercept, stopped
        worst = violators[np.argsort(-gradient[violators])[:_ADD_COLUMNS]]
        columns = np.union1d(columns, worst)


def _row_columns(x: sp.csc_matrix, rows: np.ndarray) -> np.ndarray:
    """Columns with a nonzero in any of `rows` (TF-IDF values are never negative)."""
    indicator = np.zeros(x.shape[0], dtype=x.dtype)
    indicator[rows] = 1
    return np.flatnonzero(x.T @ indicator)


def _fit_l1_block(
    x: sp.csc_matrix, y: np.ndarray, C: float, class_weight: str | None
) -> tuple[sp.csc_matrix, np.ndarray, int]:
    """L1 logistic regressions for a block of tags: (sparse coefficients (F, block), intercepts (block,), how
    many fits stopped at the iteration limit).

    LIBLINEAR shuffles the data with a random generator: it is seeded, so the same data give the same model."""
    rows, cols, values, intercepts, unconverged = [], [], [], [], 0
    for j in range(y.shape[1]):
        columns, weights, intercept, stopped = _fit_l1_tag(x, y[:, j], C, class_weight)
        rows.append(columns)
        cols.append(np.full(len(columns), j))
        values.append(weights)
        intercepts.append(intercept)
        unconverged += stopped
    coef = sp.csc_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(x.shape[1], y.shape[1]),
        dtype=np.float32,
    )
    return coef, np.array(intercepts, dtype=np.float32), unconverged


class _SparseOneVsRest:
    """One-vs-rest L1 logistic regression with the coefficients kept as one sparse matrix.

    Large multi-valued families (thousands of brands or product types) would need a dense weight per tag
    and feature (gigabytes); L1 keeps only the n-grams that matter for each tag, which is also what a
    title tag with a handful of examples can support.
    """

    def __init__(self, coef: sp.csc_matrix, intercept: np.ndarray) -> None:
        self.coef, self.intercept = coef, intercept

    @classmethod
    def fit(cls, x: sp.csr_matrix, y: np.ndarray, C: float, class_weight: str | None, n_jobs: int) -> _SparseOneVsRest:
        """Fit every tag; fits that stop at LIBLINEAR's iteration limit (common for tags with two or three
        examples among many n-grams) are counted in one log line, not one warning each."""
        blocks = [b for b in np.array_split(np.arange(y.shape[1]), 4 * max(n_jobs, 1)) if len(b)]
        x = x.tocsc()  # each tag's fit takes column subsets
        x.sort_indices()  # canonical order, so parallel workers can use it read-only
        fitted = Parallel(n_jobs=n_jobs)(delayed(_fit_l1_block)(x, y[:, b], C, class_weight) for b in blocks)
        unconverged = sum(n for _, _, n in fitted)
        if unconverged:  # a fact for the log, not a warning for a user: nothing to do about it
            log.info("lexical source: %d of %d tag fits stopped at the iteration limit (their coefficients are "
                     "still usable)", unconverged, y.shape[1])
        return cls(sp.hstack([c for c, _, _ in fitted], format="csc"), np.concatenate([b for _, b, _ in fitted]))

    def predict_proba(self, x: sp.csr_matrix) -> np.ndarray:
        """Independent probability of each tag: sigmoid of its linear score."""
        return expit(np.asarray((x @ self.coef).todense()) + self.intercept)


class LexicalClassifier:
    """TF-IDF word + char n-grams -> logistic regression, with probability columns in vocabulary order.

    Single-label: one multinomial LR (lbfgs). Multi-label: one binary L1 LR per tag (liblinear, one-vs-rest,
    parallel over `n_jobs`, sparse coefficients). Classes without a training example get an all-zero
    column, so the output always has `n_classes` columns aligned with the caller's tag indices.
    `class_weight="balanced"` trades a little weighted F1 for recall on the long tail.

    `min_df` stays 1 although n-grams seen in one training title are most of the features: on the 4,161
    Taobao product-type titles (2,825 tags), min_df 2 keeps 89k of 259k features,
    but test weighted F1 falls from 0.884 to 0.858 (a rare type's telling n-gram is often in one title).

    `tol` / `max_iter` bound the single-label lbfgs fit. Stopping early hurts the long tail first: on the
    fashion articleType validation split, tol 1e-3 with 100 iterations gave macro F1 0.805 against 0.891
    at tol 1e-4 (62 iterations), weighted F1 0.962 against 0.968. Loosen it only for throw-away fits
    (e.g. cross-fitting folds that only set fusion weights). That fit's OpenMP loss runs on one thread: on
    scikit-learn's own OpenMP runtime (training loads torch only after the lexical fits) two threads made a
    7-family fashion training 40 % slower on 2 cores; one gives the same solution.
    """

    def __init__(
        self,
        *,
        C: float = 10.0,
        class_weight: str | None = None,
        min_df: int = 1,
        tol: float = 1e-4,
        max_iter: int = 300,
        n_jobs: int = 2,
    ) -> None:
        self.C = C
        self.class_weight = class_weight
        self.min_df = min_df
        self.tol = tol
        self.max_iter = max_iter
        self.n_jobs = n_jobs
        self.n_classes = 0
        self.multilabel = False
        self._features: FeatureUnion | FamilyColumns | None = None  # FamilyColumns once `share`d
        self._model: LogisticRegression | _SparseOneVsRest | None = None  # None: nothing to learn
        self._columns = np.empty(0, dtype=int)  # vocabulary index of each model output column
        self._always = np.empty(0, dtype=int)  # tags every training product carries: nothing to learn

    def fit(self, texts: list[str], y: np.ndarray, n_classes: int, multilabel: bool = False) -> LexicalClassifier:
        """Learn from `texts` and int labels `y` (n,), or multi-hot `y` (n, n_classes) with `multilabel`
        (dense or scipy sparse)."""
        y = y.toarray() if sp.issparse(y) else np.asarray(y)
        self.n_classes, self.multilabel = n_classes, multilabel
        self._features = _vectorizer(self.min_df)
        x = sp.csr_matrix(self._features.fit_transform([t or "" for t in texts]))
        x.sort_indices()  # canonical order: the fits' float sums, so the scores to the last bit, follow it
        self._model = None
        if multilabel:
            counts = np.asarray(y.sum(axis=0)).ravel()
            self._columns = np.flatnonzero((counts > 0) & (counts < len(y)))
            self._always = np.flatnonzero(counts == len(y))
            if len(self._columns):
                self._model = _SparseOneVsRest.fit(x, y[:, self._columns], self.C, self.class_weight, self.n_jobs)
        else:
            classes = np.unique(y)
            self._columns, self._always = (classes, classes[:0]) if len(classes) > 1 else (classes[:0], classes)
            if len(classes) > 1:
                with warnings.catch_warnings(record=True) as caught, threadpool_limits(1, user_api="openmp"):
                    warnings.simplefilter("always", ConvergenceWarning)
                    self._model = LogisticRegression(
                        C=self.C, class_weight=self.class_weight, tol=self.tol, max_iter=self.max_iter
                    ).fit(x, y)
                if any(issubclass(w.category, ConvergenceWarning) for w in caught):
                    log.info("lexical source: the %d-class fit stopped at %d iterations (still usable)",
                             len(classes), self.max_iter)
        return self

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """(n, n_classes) probabilities; columns of tags absent from training are 0, and a tag every
        training product carried (nothing to learn) is 1."""
        if self._features is None:
            raise RuntimeError("LexicalClassifier.predict_proba called before fit or load")
        if isinstance(self._features, FamilyColumns):
            raise RuntimeError("this classifier reads shared text counts: call predict_counts")
        return self._predict(lambda: self._features.transform([t or "" for t in texts]), len(texts))

    def predict_counts(self, counts: dict[str, sp.csr_matrix]) -> np.ndarray:
        """`predict_proba` from the shared counts of a batch (`TextCounts.transform`), after `share`."""
        if not isinstance(self._features, FamilyColumns):
            raise RuntimeError("predict_counts needs a classifier that shares text counts (see share)")
        return self._predict(lambda: self._features.transform(counts), next(iter(counts.values())).shape[0])

    def _predict(self, features, n: int) -> np.ndarray:
        out = np.zeros((n, self.n_classes), dtype=np.float32)
        if self._model is not None and n:
            out[:, self._columns] = self._model.predict_proba(features())
        out[:, self._always] = 1.0
        return out

    def share(self, counts: TextCounts) -> None:
        """From now on read features from `counts` (fitted on a superset of this classifier's training
        titles) instead of tokenising every title again: same features, same scores."""
        if not isinstance(self._features, FeatureUnion):
            raise RuntimeError("share needs a fitted classifier with its own vectorizer")
        self._features = FamilyColumns.of(self._features, counts)

    def save(self, path: Path) -> Path:
        """Write a classifier that shares text counts as plain arrays (an `.npz`, never a pickle), atomically.
        Its features are columns of the shared counts, saved once per model with `save_counts`."""
        if not isinstance(self._features, FamilyColumns):
            raise RuntimeError("save needs a classifier that shares text counts (see share)")
        tfidf = {name: {k: getattr(t, k) for k in ("norm", "use_idf", "smooth_idf", "sublinear_tf")}
                 for name, t in self._features.tfidf.items()}
        meta = {"n_classes": self.n_classes, "multilabel": self.multilabel, "tfidf": tfidf,
                "kind": {LogisticRegression: "multinomial", _SparseOneVsRest: "one-vs-rest"}.get(type(self._model), "none")}
        arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), "columns": self._columns,
                  "always": self._always}
        for name in PARTS:
            arrays[f"features_{name}"] = self._features.columns[name]
            arrays[f"idf_{name}"] = self._features.tfidf[name].idf_
        if isinstance(self._model, LogisticRegression):
            arrays |= {"coef": self._model.coef_, "intercept": self._model.intercept_, "classes": self._model.classes_}
        elif isinstance(self._model, _SparseOneVsRest):
            coef = self._model.coef
            arrays |= {"coef_data": coef.data, "coef_indices": coef.indices, "coef_indptr": coef.indptr,
                       "coef_shape": np.array(coef.shape), "intercept": self._model.intercept}
        with atomic_write(Path(path)) as fh:
            np.savez(fh, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> LexicalClassifier:
        """Read a classifier written by `save`; it scores the counts of the model's `load_counts`. Loaded with
        `allow_pickle=False`: a file holding pickled objects raises ValueError and runs nothing."""
        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes().decode())
            model = cls()
            model.n_classes, model.multilabel = int(meta["n_classes"]), bool(meta["multilabel"])
            model._columns, model._always = data["columns"], data["always"]
            tfidf = {}
            for name in PARTS:
                tfidf[name] = TfidfTransformer(**meta["tfidf"][name])
                tfidf[name].idf_ = data[f"idf_{name}"]
            model._features = FamilyColumns({name: data[f"features_{name}"] for name in PARTS}, tfidf)
            if meta["kind"] == "multinomial":
                lr = LogisticRegression(C=model.C, tol=model.tol, max_iter=model.max_iter)
                lr.coef_, lr.intercept_, lr.classes_ = data["coef"], data["intercept"], data["classes"]
                lr.n_features_in_ = lr.coef_.shape[1]
                model._model = lr
            elif meta["kind"] == "one-vs-rest":
                coef = sp.csc_matrix((data["coef_data"], data["coef_indices"], data["coef_indptr"]),
                                     shape=tuple(data["coef_shape"].tolist()))
                model._model = _SparseOneVsRest(coef, data["intercept"])
        return model


def save_counts(counts: TextCounts, path: Path) -> None:
    """The shared counters' vocabularies (each part's terms in column order) as JSON, atomically."""
    parts = {}
    for name, counter in counts.counters.items():
        terms = [""] * len(counter.vocabulary_)
        for term, column in counter.vocabulary_.items():
            terms[column] = term
        parts[name] = terms
    with atomic_write(Path(path), "w", encoding="utf-8") as fh:
        json.dump({"parts": parts}, fh, ensure_ascii=False)


def load_counts(path: Path) -> TextCounts:
    """Counters written by `save_counts`: the lexical analyzers with the saved vocabularies."""
    parts = json.loads(Path(path).read_text(encoding="utf-8"))["parts"]
    counts = TextCounts(_vectorizer(min_df=1))
    if set(parts) != set(counts.counters):
        raise ValueError(f"{path}: text counts for parts {sorted(parts)}, expected {sorted(counts.counters)}")
    for name, terms in parts.items():
        counts.counters[name].vocabulary_ = {term: column for column, term in enumerate(terms)}
    return counts
