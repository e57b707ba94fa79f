"""Zero-shot tag scores: a tag value with no labelled example is scored by how close its name (plus synonyms
and description) is to the product, with the sentence encoder on the text and the CLIP tower on the photo.

Everything here is a pure function over vectors; the caller encodes. Zero-shot tags are never accepted by
themselves: they are candidates for a person to review, until reviewed examples let the family train.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .names import fold, name_pattern

# Chosen on a 3,000-product fashion slice (docs/BENCHMARKS.md): cosines of one product to different tag names
# differ by a few hundredths, and a title that names the tag is strong evidence.
TEMPERATURE = 0.05
LITERAL_BONUS = 3.0
MULTI_MARGIN = 2.0
PHOTO_TEMPLATE = "a photo of {}"


@dataclass(frozen=True)
class TagPrompt:
    """A tag value and the words that describe it."""

    value: str
    synonyms: tuple[str, ...] = ()
    description: str = ""

    def texts(self) -> list[str]:
        """What is encoded for it: the name, each synonym, the description."""
        return [self.value, *self.synonyms, *([self.description] if self.description else [])]


def prompt_rows(prompts: Sequence[TagPrompt]) -> tuple[list[str], np.ndarray]:
    """All texts to encode, and for each the tag it belongs to."""
    texts, owner = [], []
    for c, p in enumerate(prompts):
        for t in p.texts():
            texts.append(t)
            owner.append(c)
    return texts, np.array(owner, dtype=np.int64)


def tag_vectors(text_vectors: np.ndarray, owner: np.ndarray, n_tags: int) -> np.ndarray:
    """(n_tags, d) one unit vector per tag: the mean of its prompts' vectors."""
    sums = np.zeros((n_tags, text_vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, owner, text_vectors)
    return (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def column_stats(similarities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per tag, mean and spread of its cosine over a catalog: what "far above the usual" means for a tag of a
    multi-valued family, which has no other tags to compete with."""
    return similarities.mean(0), np.maximum(similarities.std(0), 1e-6)


def text_scores(
    similarities: np.ndarray, matches: np.ndarray | None, stats: tuple[np.ndarray, np.ndarray] | None,
    multilabel: bool, temperature: float = TEMPERATURE, literal_bonus: float = LITERAL_BONUS,
) -> np.ndarray:
    """(n, C) zero-shot scores from cosines and literal matches.

    Single-valued family: a softmax over its values of cosine / `temperature`. Multi-valued: independent
    sigmoids of the cosine standardised by the tag's catalog `stats`, so that a tag applies to the few products
    `MULTI_MARGIN` standard deviations above its mean. A literal match adds `literal_bonus` to the logit.
    """
    if multilabel:
        if stats is None:
            raise ValueError("a multi-valued family needs the catalog statistics of its tags")
        logits = (similarities - stats[0]) / stats[1] - MULTI_MARGIN
    else:
        logits = similarities / temperature
    if matches is not None:
        logits = logits + literal_bonus * matches
    if multilabel:
        return 1.0 / (1.0 + np.exp(-logits))
    logits = logits - logits.max(1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def combine(text: np.ndarray, photo: np.ndarray | None, has_photo: np.ndarray, photo_weight: float) -> np.ndarray:
    """Text scores mixed with photo scores where there is a photo."""
    if photo is None or photo_weight <= 0:
        return text
    w = np.where(has_photo, photo_weight, 0.0)[:, None]
    return (1 - w) * text + w * photo


def literal_matches(product_texts: Sequence[str], prompts: Sequence[TagPrompt]) -> np.ndarray:
    """(n, C) 1.0 where the product's text names the tag or one of its synonyms: titles often say exactly what
    the product is, which a sentence embedding blurs."""
    patterns = [[name_pattern(t) for t in (p.value, *p.synonyms)] for p in prompts]
    out = np.zeros((len(product_texts), len(prompts)), dtype=np.float32)
    for r, text in enumerate(product_texts):
        folded = fold(text)
        for c, pats in enumerate(patterns):
            if any(p.search(folded) for p in pats):
                out[r, c] = 1.0
    return out
