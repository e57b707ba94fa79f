"""Fixed train / validation / test split by a hash of the product id.

A product keeps its split across runs, machines and catalog orders, so evaluations are comparable and
a product added later never moves an old one between splits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Literal

import numpy as np

Split = Literal["train", "val", "test"]


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
    """Boolean masks over `ids` for each split."""
    splits = np.array([split_of(i, validation_fraction, test_fraction) for i in ids])
    return {name: splits == name for name in ("train", "val", "test")}
