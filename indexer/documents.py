"""What the pipeline hands to a search backend, and what a backend answers.

Both backends (embedded SQLite+FAISS and Elasticsearch) take the same `SearchDoc`s and answer the same
`SearchResults`, so tests run one set of assertions against both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class DocTag:
    """One tag of a product as search sees it: the value, its calibrated score and where it came from."""

    value: str
    score: float
    source: str  # "manual" | "feedback" | "model"


@dataclass
class SearchDoc:
    """A product as indexed for search and recommendations."""

    id: str
    title: str
    description: str = ""
    # family -> accepted tags (tags "needing review" are not searchable)
    tags: dict[str, list[DocTag]] = field(default_factory=dict)
    text_vector: np.ndarray | None = None
    image_vector: np.ndarray | None = None
    fused_vector: np.ndarray | None = None
    content_hash: str = ""
    text_model: str = ""
    image_model: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchQuery:
    """A storefront query: free text (any language), its text-encoder vector, tag filters, paging."""

    text: str = ""
    vector: np.ndarray | None = None  # the text encoder's vector of `text`, for the kNN half of hybrid search
    # family -> allowed values; values inside a family are OR-ed, families are AND-ed
    filters: dict[str, list[str]] = field(default_factory=dict)
    size: int = 10
    facets: tuple[str, ...] = ()  # tag families to count
    facet_size: int = 20
    rank_constant: int = 60  # reciprocal rank fusion's k
    window: int = 100  # how many candidates each half contributes before fusion


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    title: str = ""
    tags: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class SearchResults:
    hits: list[Hit]
    total: int
    # family -> [(value, count)], most frequent first
    facets: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


@dataclass
class WriteReport:
    """What a bulk write did. Failed documents are listed, never dropped silently."""

    written: int = 0
    deleted: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (doc id, reason)

    @property
    def ok(self) -> bool:
        return not self.failed
