"""Tag families and their vocabularies, learnt from the known tags of the catalog.

A family is multi-valued when any product carries more than one value in it (e.g. scenes), single-valued
otherwise (e.g. a product's article type). By default every value is learnt, even one seen once (the long
tail is where users need help most; such tags share a pooled, bounded threshold, so they are accepted only
as far as the rare tags together prove precise). With `min_count` > 1, rarer values are not learnt and their
products count as labelled with no learnable value; `evaluate` reports how many test tags that leaves out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class FamilyVocab:
    name: str
    values: tuple[str, ...]
    multilabel: bool
    counts: tuple[int, ...]  # training occurrences of each value

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {v: i for i, v in enumerate(self.values)})

    def __len__(self) -> int:
        return len(self.values)

    def index(self, value: str) -> int | None:
        return self._index.get(value)  # type: ignore[attr-defined]

    def label_matrix(self, tag_lists: Sequence[Sequence[str] | None]) -> sp.csr_matrix:
        """(n, C) 0/1 sparse matrix of each product's known values (unknown values dropped)."""
        rows, cols = [], []
        for row, values in enumerate(tag_lists):
            for value in values or ():
                col = self.index(value)
                if col is not None:
                    rows.append(row)
                    cols.append(col)
        data = np.ones(len(rows), dtype=np.float32)
        return sp.csr_matrix((data, (rows, cols)), shape=(len(tag_lists), len(self)))

    def single_labels(self, tag_lists: Sequence[Sequence[str] | None]) -> np.ndarray:
        """Class index per product, -1 where the product has no learnable value in this family."""
        out = np.full(len(tag_lists), -1, dtype=np.int64)
        for row, values in enumerate(tag_lists):
            for value in values or ():
                col = self.index(value)
                if col is not None:
                    out[row] = col
                    break
        return out

    def to_dict(self) -> dict:
        return {"name": self.name, "values": list(self.values), "multilabel": self.multilabel, "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, data: Mapping) -> FamilyVocab:
        return cls(data["name"], tuple(data["values"]), bool(data["multilabel"]), tuple(data["counts"]))


def build_vocabs(tags: Sequence[Mapping[str, Sequence[str]]], min_count: int = 1) -> dict[str, FamilyVocab]:
    """One vocabulary per family found in `tags` (each product's family -> values), most frequent first."""
    counters: dict[str, Counter[str]] = {}
    multi: set[str] = set()
    for product_tags in tags:
        for family, values in product_tags.items():
            if not values:
                continue
            counters.setdefault(family, Counter()).update(dict.fromkeys(values, 1))
            if len(set(values)) > 1:
                multi.add(family)
    vocabs = {}
    for family in sorted(counters):
        kept = [(v, c) for v, c in counters[family].most_common() if c >= min_count]
        if len(kept) >= 2 or (family in multi and kept):
            vocabs[family] = FamilyVocab(family, tuple(v for v, _ in kept), family in multi, tuple(c for _, c in kept))
    return vocabs
