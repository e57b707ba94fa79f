"""What the pipeline hands to a search backend, and what a backend answers.

Both backends (embedded SQLite+FAISS and Elasticsearch) take the same `SearchDoc`s and answer the same
`SearchResults`, so tests run one set of assertions against both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

WORD = re.compile(r"\w+")


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
    # shop attributes as text; a backend indexes its declared numeric ones (price, ...) as numbers (ranges,
    # range facets, sorting) and the rest as keywords (term filters, facets)
    attributes: dict[str, str] = field(default_factory=dict)
    listed_at: float = 0.0  # when the product last entered or changed in the catalog (seconds): "newest"
    popularity: float | None = None  # from behaviour data, when there is any: "popularity"


# sort name -> (document sort key, descending); relevance is the fused score, everything ties by id ascending
SORTS: dict[str, tuple[str, bool] | None] = {
    "relevance": None,
    "price_asc": ("price", False),
    "price_desc": ("price", True),
    "newest": ("listed_at", True),
    "popularity": ("popularity", True),
}
MISSING_LAST = 1e300  # a product without the sort key sorts after every product with it, in both directions


@dataclass(frozen=True)
class Diversity:
    """A re-rank so near-duplicates do not fill a page: MMR over product vectors, or at most `max_per_value`
    products per value of tag family `family` in each page."""

    kind: str  # "mmr" | "cap"
    lambda_: float = 0.7  # mmr: weight of relevance against novelty
    family: str = ""  # cap: the tag family
    max_per_value: int = 2  # cap


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
    # the kNN half keeps only products at least this cosine-similar to `vector` (None: the whole window), so a
    # query's hits, total and facets come from its text matches plus its real neighbours, not the whole window
    min_similarity: float | None = None
    offset: int = 0  # "from": hits to skip
    sort: str = "relevance"  # a key of SORTS
    # search_after for field sorts and browsing: the sort values of the last hit of the previous page
    after: tuple[float | str, ...] | None = None
    seen: int = 0  # with `after`: the hits of the pages before, so the last page carries no cursor
    # numeric attribute -> (min, max), inclusive, either open (None)
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    # keyword attribute -> allowed values (OR within, AND across, like tag filters)
    attributes: dict[str, list[str]] = field(default_factory=dict)
    attribute_facets: tuple[str, ...] = ()
    # numeric attribute -> ascending bucket edges e0 < e1 < ...: buckets [-inf, e0), [e0, e1), ..., [en, inf)
    range_facets: dict[str, tuple[float, ...]] = field(default_factory=dict)
    # query tags applied as a boost: family -> values; a text match carrying one of a family's values gains
    # `boost_weight` on its BM25 score (an Elasticsearch `terms` clause in `should` scores its boost)
    boosts: dict[str, list[str]] = field(default_factory=dict)
    boost_weight: float = 2.0
    # tags the query names (family -> values, like filters): a second kNN list looks only among the products
    # carrying them and joins the fusion, so Nike backpacks lead the vector side of "耐克 双肩包" while the
    # plain kNN list and the text matches still bring the rest
    vector_filters: dict[str, list[str]] = field(default_factory=dict)
    highlight: bool = False
    diversity: Diversity | None = None

    @property
    def sort_key(self) -> tuple[str, bool] | None:
        """(document field, descending) of a field sort; None for relevance."""
        return SORTS[self.sort]

    @property
    def knn_filters(self) -> dict[str, list[str]]:
        """The tag filters of the named tags' kNN list: `vector_filters`, where the shop's own `filters` do not
        decide."""
        return {**self.vector_filters, **self.filters}

    @property
    def ranked(self) -> bool:
        """Whether hits come in relevance order (text or vector, no field sort), paged by offset only."""
        return self.sort_key is None and (WORD.search(self.text) is not None or self.vector is not None)


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    title: str = ""
    tags: dict[str, list[str]] = field(default_factory=dict)
    description: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    numbers: dict[str, float] = field(default_factory=dict)
    # field sorts and browsing: the values search_after continues from (sort key, then id)
    sort_values: tuple[float | str, ...] = ()
    highlights: dict[str, str] = field(default_factory=dict)  # title / description with query words marked


@dataclass(frozen=True)
class RangeBucket:
    key: str  # "*-25", "25-50", "50-*"
    low: float | None  # inclusive
    high: float | None  # exclusive
    count: int


@dataclass
class SearchResults:
    hits: list[Hit]
    total: int
    # "eq": `total` is exact; "gte": the cluster stopped counting at `total` (Elasticsearch's hits.total.relation)
    total_relation: str = "eq"
    # family -> [(value, count)], most frequent first
    facets: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    attribute_facets: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    range_facets: dict[str, list[RangeBucket]] = field(default_factory=dict)
    cursor: str | None = None  # opaque: the next page, when there is one


@dataclass
class WriteReport:
    """What a bulk write did. Failed documents are listed, never dropped silently."""

    written: int = 0
    deleted: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (doc id, reason)

    @property
    def ok(self) -> bool:
        return not self.failed
