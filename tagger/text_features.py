"""Shared text features for the lexical source: titles are tokenised once per batch, whatever the number of
tag families.

Each family's lexical classifier is fit on its own TF-IDF (its own vocabulary and IDF, from the products
labelled in that family), but the vocabularies are near-identical. `TextCounts` counts word 1-2-grams and
char_wb 2-4-grams over the union vocabulary once; `FamilyColumns` turns those counts into one family's
TF-IDF by picking its columns and applying its IDF and norm — the very operations its own vectorizer would
run, so the features (and the scores) are the same, bit for bit, at a seventh of the tokenising.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.pipeline import FeatureUnion

PARTS = ("word", "char")  # the FeatureUnion parts of a lexical vectorizer, in order


class TextCounts:
    """Word and char n-gram counters over every family's training titles (the union vocabulary)."""

    def __init__(self, vectorizer: FeatureUnion) -> None:
        """Counters with the analyzers of `vectorizer` (a lexical FeatureUnion, fitted or not)."""
        self.counters = {}
        for name, part in vectorizer.transformer_list:
            params = {k: v for k, v in part.get_params().items() if k in CountVectorizer().get_params()}
            self.counters[name] = CountVectorizer(**{**params, "min_df": 1, "max_df": 1.0, "max_features": None})

    def fit(self, texts: Sequence[str]) -> TextCounts:
        for counter in self.counters.values():
            counter.fit([t or "" for t in texts])
        return self

    def transform(self, texts: Sequence[str]) -> dict[str, sp.csr_matrix]:
        """Counts per part for a batch of titles, columns in union-vocabulary order."""
        return {name: counter.transform([t or "" for t in texts]) for name, counter in self.counters.items()}


@dataclass
class FamilyColumns:
    """One family's TF-IDF as a view of the shared counts: its vocabulary's columns and its fitted IDF."""

    columns: dict[str, np.ndarray]
    tfidf: dict[str, TfidfTransformer]

    @classmethod
    def of(cls, vectorizer: FeatureUnion, counts: TextCounts) -> FamilyColumns:
        """The view of a fitted family vectorizer; every term of it must be in the shared vocabulary."""
        columns, tfidf = {}, {}
        for name, part in vectorizer.transformer_list:
            assert isinstance(part, TfidfVectorizer)
            union = counts.counters[name].vocabulary_
            cols = np.empty(len(part.vocabulary_), dtype=np.int64)
            for term, col in part.vocabulary_.items():
                cols[col] = union[term]
            columns[name] = cols
            tfidf[name] = TfidfTransformer(
                norm=part.norm, use_idf=part.use_idf, smooth_idf=part.smooth_idf, sublinear_tf=part.sublinear_tf
            )
            tfidf[name].idf_ = part.idf_
        return cls(columns, tfidf)

    def transform(self, counts: dict[str, sp.csr_matrix]) -> sp.csr_matrix:
        """The family's TF-IDF matrix, as its FeatureUnion would produce it."""
        return sp.hstack(
            [self.tfidf[name].transform(counts[name][:, self.columns[name]]) for name in PARTS], format="csr"
        )
