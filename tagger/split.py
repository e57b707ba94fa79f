"""Train / validation / test split by a hash, with near-duplicates kept on one side.

A product keeps its split across runs, machines and catalog orders, so evaluations are comparable and a
product added later never moves an old one between splits. Catalogs are full of near-duplicates (the same
title in five sizes or colours); split one by one, a copy lands in training and its twin in test, and the
held-out score measures memory, not tagging. `grouped_split` therefore splits *groups*: products with the
same normalised title, or whose vectors are closer than a similarity, share the split of their group.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
_NOT_WORD = re.compile(r"[\W_]+")


def unit_hash(product_id: str, salt: str = "shoptag-split-v1") -> float:
    """A number in [0, 1) fixed by the product id: sha256 of salt + id, first 8 bytes."""
    digest = hashlib.sha256(f"{salt}:{product_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(product_id: str, validation_fraction: float, test_fraction: float) -> Split:
    """`test` for the first `test_fraction` of the hash range, then `val`, then `train`."""
    u = unit_hash(product_id)
    if u < test_fraction:
        return "test"
    if u < test_fraction + validation_fraction:
        return "val"
    return "train"


def split_mask(ids: Iterable[str], validation_fraction: float, test_fraction: float) -> dict[Split, np.ndarray]:
    """Boolean masks over `ids` for each split, product by product (no grouping)."""
    splits = np.array([split_of(i, validation_fraction, test_fraction) for i in ids])
    return {name: splits == name for name in SPLITS}


def normalise_title(title: str) -> str:
    """What makes two titles "the same": NFKC, lowercase, punctuation and spacing ignored."""
    return _NOT_WORD.sub(" ", unicodedata.normalize("NFKC", title).lower()).strip()


@dataclass(frozen=True)
class GroupedSplit:
    masks: dict[Split, np.ndarray]
    group: np.ndarray  # group number of each product
    groups: int  # groups the products fell into
    merged_products: int  # products that share their group with another product
    merged_by_vector: int  # groups joined because their vectors are near, beyond equal titles
    largest: int  # products in the largest group


def near_pairs(vectors: np.ndarray, similarity: float, k: int = 8, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) row pairs whose cosine similarity is at least `similarity`, among each row's `k` nearest.

    Exact inner-product search over unit vectors in batches: memory stays batch × k, not n × n."""
    unit = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    faiss.normalize_L2(unit)
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    left, right = [], []
    for start in range(0, len(unit), batch):
        sims, rows = index.search(unit[start : start + batch], min(k + 1, len(unit)))
        hit = (sims >= similarity) & (rows >= 0)
        query = np.repeat(np.arange(start, start + len(sims)), sims.shape[1]).reshape(sims.shape)
        keep = hit & (rows != query)
        left.append(query[keep])
        right.append(rows[keep])
    return np.concatenate(left) if left else np.zeros(0, int), np.concatenate(right) if right else np.zeros(0, int)


def grouped_split(
    ids: Sequence[str],
    titles: Sequence[str],
    validation_fraction: float,
    test_fraction: float,
    vectors: np.ndarray | None = None,
    similarity: float | None = None,
) -> GroupedSplit:
    """Masks for each split where products with the same normalised title, or (with `vectors` and
    `similarity`) cosine similarity at least `similarity`, are on the same side.

    A group takes the split of its smallest normalised title (ties: smallest id), so a group keeps its split
    as long as its members do not change."""
    n = len(ids)
    keys = [normalise_title(t) or f"\0{pid}" for pid, t in zip(ids, titles)]  # an empty title groups alone
    key_of: dict[str, int] = {}
    title_group = np.array([key_of.setdefault(k, len(key_of)) for k in keys], dtype=np.int64)
    # title groups are nodes; a near pair of products joins their title groups
    left, right = np.zeros(0, int), np.zeros(0, int)
    if vectors is not None and similarity is not None and n > 1:
        left, right = near_pairs(vectors, similarity)
    edges = coo_matrix(
        (np.ones(len(left) + n), (np.concatenate([title_group[left], title_group]), np.concatenate([title_group[right], title_group]))),
        shape=(len(key_of), len(key_of)),
    )
    n_groups, component = connected_components(edges, directed=False)
    group = component[title_group]
    representative: dict[int, str] = {}
    for g, k in zip(group, keys):
        if g not in representative or k < representative[g]:
            representative[g] = k
    split = {g: split_of(key, validation_fraction, test_fraction) for g, key in representative.items()}
    labels = np.array([split[g] for g in group])
    sizes = np.bincount(group, minlength=n_groups)
    return GroupedSplit(
        masks={name: labels == name for name in SPLITS},
        group=group,
        groups=int(n_groups),
        merged_products=int((sizes[group] > 1).sum()),
        merged_by_vector=len(key_of) - int(n_groups),
        largest=int(sizes.max()) if n else 0,
    )
