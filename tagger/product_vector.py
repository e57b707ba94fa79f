"""The fused product vector: text and image halves side by side, weighted so that inner product is a weighted
sum of the two cosine similarities.

With unit text vector t, unit image vector i and image weight w, a product with a photo is
``[sqrt(1-w)·t, sqrt(w)·i]`` (unit norm). A product without one is ``[sqrt(1-w)·t, 0]``: the missing half adds
nothing, so a query without photo ranks every candidate by text alone, and a product is never pulled
towards others just because they also lack a photo. `query_scale` undoes the shorter norm where a
similarity must be read on the cosine scale (kNN vote weights).
"""

from __future__ import annotations

import numpy as np


def fuse(text: np.ndarray, image: np.ndarray | None, has_image: np.ndarray | None, image_weight: float) -> np.ndarray:
    """(n, dt [+ di]) fused vectors; rows with ``has_image`` False get a zero image half."""
    text = np.asarray(text, dtype=np.float32)
    if image is None:
        return text.copy()
    image = np.asarray(image, dtype=np.float32)
    if has_image is None:
        has_image = np.ones(len(text), dtype=bool)
    image_half = np.sqrt(image_weight) * image * has_image[:, None]
    return np.hstack([np.sqrt(1.0 - image_weight) * text, image_half]).astype(np.float32)


def query_scale(fused: np.ndarray) -> np.ndarray:
    """1 / squared norm of each fused row: multiply a row's similarities by this to compare rows with and
    without photos on one scale."""
    sq = np.einsum("ij,ij->i", fused, fused)
    return 1.0 / np.maximum(sq, 1e-12)
