"""What both search backends share: vector sizes, reciprocal rank fusion and change fingerprints.

Keeping these in one place is what makes the embedded store and Elasticsearch rank, fuse and detect
changed products the same way, so one set of tests holds for both.
"""

from __future__ import annotations

import hashlib
import math
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from .documents import WORD, SearchDoc

T = TypeVar("T")


def has_words(text: str) -> bool:
    """Whether a query text has anything to match; text without words is treated as no text at all."""
    return WORD.search(text) is not None


@dataclass(frozen=True)
class VectorDims:
    """Dimensions of the vectors a backend stores; `image` is None for text-only catalogs."""

    text: int
    image: int | None
    fused: int

    def check(self, doc: SearchDoc) -> str | None:
        """Why `doc`'s vectors do not fit, or None when they do (a missing vector fits)."""
        for name, dim in (("text", self.text), ("image", self.image), ("fused", self.fused)):
            vector = getattr(doc, f"{name}_vector")
            if vector is None:
                continue
            if dim is None:
                return f"{name}_vector given but this index has no {name} vectors"
            if np.asarray(vector).shape != (dim,):
                return f"{name}_vector has shape {np.asarray(vector).shape}, expected ({dim},)"
        return None


def rrf_fuse(ranked: Sequence[Sequence[str]], rank_constant: int) -> list[tuple[str, float]]:
    """Reciprocal rank fusion, as Elasticsearch's `rrf` retriever computes it: sum of 1 / (k + rank), rank from 1.

    Ties are broken by id so that results are deterministic.
    """
    scores: dict[str, float] = {}
    for ids in ranked:
        for rank, pid in enumerate(ids, start=1):
            scores[pid] = scores.get(pid, 0.0) + 1.0 / (rank_constant + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def _add_vectors(digest, vectors: Iterable[np.ndarray | None]) -> None:
    """Feed vectors to a hashlib digest as float32 bytes, "-" for a missing one."""
    for vector in vectors:
        digest.update(b"-" if vector is None else np.asarray(vector, dtype=np.float32).tobytes())


def vectors_hash(doc: SearchDoc) -> str:
    """A digest of the vectors the embedded backend logs (text and fused)."""
    digest = hashlib.sha1(usedforsecurity=False)
    _add_vectors(digest, (doc.text_vector, doc.fused_vector))
    return digest.hexdigest()


def doc_fingerprint(doc: SearchDoc) -> str:
    """A digest of everything a backend stores for `doc`; equal digests mean there is nothing to resend."""
    digest = hashlib.sha256()
    fields = {
        "id": doc.id,
        "title": doc.title,
        "description": doc.description,
        "tags": {f: [[t.value, t.score, t.source] for t in tags] for f, tags in sorted(doc.tags.items())},
        "content_hash": doc.content_hash,
        "text_model": doc.text_model,
        "image_model": doc.image_model,
        "attributes": dict(sorted(doc.attributes.items())),
        "listed_at": doc.listed_at,
        "popularity": doc.popularity,
    }
    digest.update(json.dumps(fields, ensure_ascii=False, sort_keys=True).encode())
    _add_vectors(digest, (doc.text_vector, doc.image_vector, doc.fused_vector))
    return digest.hexdigest()


def changed_docs(docs: Iterable[SearchDoc], stored: dict[str, str]) -> list[SearchDoc]:
    """The docs whose fingerprint differs from the `stored` one (id -> fingerprint); new ids count as changed."""
    return [doc for doc in docs if stored.get(doc.id) != doc_fingerprint(doc)]


def tag_values(doc: SearchDoc) -> dict[str, list[str]]:
    """Family -> tag values, the shape filters, facets and hits use."""
    return {family: [t.value for t in tags] for family, tags in doc.tags.items() if tags}


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of at most `size`, so a generator of any length is read a batch at a time."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def split_attributes(attributes: dict[str, str], numeric: Sequence[str]) -> tuple[dict[str, str], dict[str, float]]:
    """(keyword attributes, numeric attributes) of a product: the `numeric` names whose value is a finite
    number become numbers; a numeric name with another value is left out (ingest rejects such records)."""
    keywords, numbers = {}, {}
    for name, value in attributes.items():
        if name not in numeric:
            keywords[name] = value
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        if math.isfinite(number):
            numbers[name] = number
    return keywords, numbers


def range_buckets(edges: Sequence[float]) -> list[tuple[str, float | None, float | None]]:
    """(key, low inclusive, high exclusive) of the buckets that ascending `edges` cut the number line into:
    ``*-e0``, ``e0-e1``, ..., ``en-*``."""
    bounds: list[float | None] = [None, *edges, None]
    return [(f"{'*' if low is None else f'{low:g}'}-{'*' if high is None else f'{high:g}'}", low, high)
            for low, high in zip(bounds, bounds[1:])]
