"""Request and response bodies of the service, with the limits a request must respect.

Field types are checked here; what makes a product record valid (text length, images, id rules) is the
catalog reader's job (`parse_record`), so the service and `shoptag ingest` accept exactly the same products.
The batch limit is a setting (`service.max_batch`) and is checked by the endpoints.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shoptag.catalog.records import MAX_ID_CHARS
from shoptag.pipeline.search import MAX_QUERY_CHARS

MAX_K = 100


class ProductIn(BaseModel):
    """A product as in a catalog line; other top-level fields are attributes, as in the catalog."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "id": "sku-1001", "title": "女士高腰牛仔裤 修身显瘦", "description": "Stretch denim, ankle length",
        "attributes": {"brand": "Levi's", "material": "棉"}, "tags": {"category": ["Jeans"]},
    }]})

    id: Annotated[str, StringConstraints(max_length=MAX_ID_CHARS)] | int
    title: str | None = None
    description: str | None = None
    attributes: dict[str, Any] | None = None
    image: str | None = None
    tags: dict[str, list[str] | str] | None = None

    def record(self) -> dict[str, Any]:
        """The catalog record this request stands for (extra fields included, absent ones left out)."""
        return self.model_dump(exclude_none=True)


class TagOut(BaseModel):
    value: str
    source: str  # feedback | catalog | model | behaviour
    status: str  # accepted | review | replaced (a catalog tag a correction overrode)
    score: float | None
    evidence: dict[str, Any] | None = None  # model tags: source scores, fusion weights, voting neighbours;
    # behaviour tags: monthly sales share and lift, or co-purchase share and the tagger's score
    why: str | None = None  # one line, for tags rules, the taxonomy or behaviour made


class ProductOut(BaseModel):
    id: str
    title: str
    image: str | None
    tags: dict[str, list[TagOut]]


class ProductsOut(BaseModel):
    products: list[ProductOut]


class HitOut(BaseModel):
    id: str
    score: float
    title: str
    tags: dict[str, list[str]]
    attributes: dict[str, str] = {}
    numbers: dict[str, float] = {}
    highlights: dict[str, str] = {}  # title / description with the query's words in <em>, when asked


class SimilarOut(BaseModel):
    id: str
    hits: list[HitOut]


class FacetOut(BaseModel):
    value: str
    count: int


class RangeBucketOut(BaseModel):
    key: str
    low: float | None  # inclusive
    high: float | None  # exclusive
    count: int


class QueryTagOut(BaseModel):
    """A tag the query asks for (the tagger is confident of it, or the query names it), and how it was used."""

    family: str
    value: str
    score: float
    threshold: float | None  # None: never accepted by its score alone
    used_as: str  # boost | suggestion
    sources: dict[str, float]
    named: bool = False  # the query names the value; as a boost, its products also get a kNN list of their own


class SearchOut(BaseModel):
    total: int
    total_relation: Literal["eq", "gte"] = "eq"  # "gte": at least `total` matches (the count stopped there)
    hits: list[HitOut]
    facets: dict[str, list[FacetOut]]
    attribute_facets: dict[str, list[FacetOut]] = {}
    range_facets: dict[str, list[RangeBucketOut]] = {}
    cursor: str | None = None  # pass as `cursor` for the next page
    query_tags: list[QueryTagOut] = []
    suggested_filters: dict[str, list[str]] = {}
    hint: str | None = None  # why nothing matched, when it is the workspace or a filter value, not the words


class FeedbackOut(BaseModel):
    applied: int
    products: list[str]


class DeletedOut(BaseModel):
    id: str
    deleted: bool


class HealthOut(BaseModel):
    status: str
    products: int
    indexed: int
    model: bool


class ErrorOut(BaseModel):
    error: str
    detail: Any


class EventIn(BaseModel):
    """One shopper event (docs/BEHAVIOUR.md); `id` makes retries idempotent across batches."""

    model_config = ConfigDict(extra="forbid")

    # epoch seconds up to the year 9999: a bigger number was a 500 (an int64 overflow), found by fuzzing
    time: str | Annotated[int, Field(ge=0, le=253_402_300_799)] = Field(
        description="ISO 8601 (naive = UTC) or epoch seconds.")
    type: str = Field(description="view, click, cart, purchase, return or search.", max_length=20)
    user: str | None = Field(None, max_length=MAX_ID_CHARS)
    session: str | None = Field(None, max_length=MAX_ID_CHARS)
    item: str | None = Field(None, max_length=MAX_ID_CHARS)
    query: str | None = Field(None, max_length=MAX_QUERY_CHARS)
    quantity: float | None = None
    price: float | None = None
    id: str | None = Field(None, max_length=MAX_ID_CHARS)


class EventRejectOut(BaseModel):
    line: int
    item: str | None
    reason: str


class EventsOut(BaseModel):
    received: int
    added: int
    duplicates: int
    rejected: int
    rejects: list[EventRejectOut]


class RecommendationOut(BaseModel):
    id: str
    score: float
    reason: str
    title: str


class RecommendationsOut(BaseModel):
    user: str
    known_user: bool
    items: list[RecommendationOut]
