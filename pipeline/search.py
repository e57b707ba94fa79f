"""Stage: a storefront search as the CLI and the service both run it.

Parses the request's text forms (``family=value``, ``price=10:50``, ``price=25,50,100``, ``mmr:0.7``) into a
`SearchQuery`, checks it against what the catalog has, runs the tagger on the query text (query understanding),
encodes the text and hands it to `indexer.storefront.search`. Every problem with the request is one `BadInput`
naming it, raised before anything reaches a backend.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from shoptag.core.errors import BadInput, Conflict
from shoptag.indexer import storefront
from shoptag.indexer.backend import SearchBackend
from shoptag.indexer.documents import Diversity, SearchQuery, SearchResults
from shoptag.indexer.paging import Known, Limits, check_query
from shoptag.indexer.search_common import has_words
from shoptag.store.records import Store
from shoptag.tagger.model import TaggerModel

from shoptag.taxonomy.tree import LEVEL_MARK, level_values

from .encode import Encoders
from .query_tags import MODES, QueryTag, applied, as_filters, understand
from shoptag.core.settings import Settings
from .tag import load_checked_model
from .workspace import Workspace


MAX_QUERY_CHARS = 500  # a shopper's query; longer text is a paste, not a search


@dataclass(frozen=True)
class SearchRequest:
    """A storefront query in the text forms a command line or a URL carries."""

    text: str = ""
    tags: Sequence[str] = ()  # family=value
    attributes: Sequence[str] = ()  # name=value
    ranges: Sequence[str] = ()  # name=min:max, either side may be empty
    facets: Sequence[str] = ()  # tag families
    attribute_facets: Sequence[str] = ()
    range_facets: Sequence[str] = ()  # name=e0,e1,...
    size: int = 10
    offset: int = 0
    cursor: str | None = None
    sort: str = "relevance"
    highlight: bool = False
    diversity: str | None = None  # mmr[:lambda] | cap:family[:n]
    query_tags: str | None = None  # boost | suggest | off; None: the setting `search.query_tags`


@dataclass
class SearchAnswer:
    results: SearchResults
    query_tags: list[QueryTag] = field(default_factory=list)  # what query understanding found, and how it was used
    suggested_filters: dict[str, list[str]] = field(default_factory=dict)
    hint: str | None = None  # why nothing matched, when the reason is the workspace rather than the query


def pairs(items: Sequence[str], what: str, key: str = "name") -> dict[str, list[str]]:
    """``name=value`` strings -> name -> values; `BadInput` naming the first malformed one (`key`: what the
    message calls the name, e.g. ``family``)."""
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise BadInput(f"bad {what} {item[:80]!r}: expected {key}=value")
        out.setdefault(name.strip(), []).append(value.strip())
    return out


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"{what}: {text[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise BadInput(f"{what}: {text[:40]!r} is not a finite number")
    return value


def ranges(items: Sequence[str]) -> dict[str, tuple[float | None, float | None]]:
    """``price=10:50`` (``10:`` and ``:50`` open) -> name -> (min, max)."""
    out = {}
    for item in items:
        name, sep, bounds = item.partition("=")
        low, colon, high = bounds.partition(":")
        if not sep or not name.strip() or not colon or not (low.strip() or high.strip()):
            raise BadInput(f"bad range {item[:80]!r}: expected name=min:max (either side may be empty)")
        out[name.strip()] = tuple(_number(b, f"range {name.strip()}") if b.strip() else None for b in (low, high))
    return out  # type: ignore[return-value]


def buckets(items: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """``price=25,50,100`` -> name -> bucket edges."""
    out = {}
    for item in items:
        name, sep, edges = item.partition("=")
        if not sep or not name.strip() or not edges.strip():
            raise BadInput(f"bad range facet {item[:80]!r}: expected name=edge,edge,...")
        out[name.strip()] = tuple(_number(e, f"range facet {name.strip()}") for e in edges.split(","))
    return out


def diversity(text: str | None) -> Diversity | None:
    """``mmr``, ``mmr:0.5``, ``cap:category`` or ``cap:category:3`` -> the re-rank (None: off)."""
    if not text:
        return None
    kind, _, rest = text.partition(":")
    if kind == "mmr":
        return Diversity("mmr", lambda_=_number(rest, "mmr lambda") if rest else 0.7)
    if kind == "cap":
        family, _, most = rest.partition(":")
        if not family:
            raise BadInput("diversity cap needs a tag family: cap:family[:max per value]")
        if most and not most.isdigit():
            raise BadInput(f"diversity cap: {most[:20]!r} is not a whole number")
        return Diversity("cap", family=family, max_per_value=int(most) if most else 2)
    raise BadInput(f"unknown diversity {text[:40]!r}: mmr[:lambda] or cap:family[:max per value]")


def build_query(request: SearchRequest, boost_weight: float) -> SearchQuery:
    """The backend query of `request` (no vector yet, no query tags yet)."""
    if len(request.text) > MAX_QUERY_CHARS:
        raise BadInput(f"query text has {len(request.text)} characters: at most {MAX_QUERY_CHARS}")
    if request.query_tags is not None and request.query_tags not in MODES:
        raise BadInput(f"unknown query tags mode {request.query_tags!r}: one of {', '.join(MODES)}")
    return SearchQuery(
        text=request.text, filters=pairs(request.tags, "tag filter", "family"), size=request.size, offset=request.offset,
        sort=request.sort, ranges=ranges(request.ranges), attributes=pairs(request.attributes, "attribute filter"),
        facets=tuple(request.facets), attribute_facets=tuple(request.attribute_facets),
        range_facets=buckets(request.range_facets), highlight=request.highlight,
        diversity=diversity(request.diversity), boost_weight=boost_weight,
    )


# The cosine below which a product is no neighbour of a query, per text encoder (`search.min_similarity = "auto"`).
# Measured on judged queries (bench/judged_queries.py, 300 products and 20 queries per language): MiniLM puts
# the median relevant product at 0.47 and 93% of them at 0.3 or more, while 29% of irrelevant ones reach 0.3;
# USE-multilingual's cosines of short Chinese queries to long titles are lower (relevant median 0.27, a quarter
# below 0.18; irrelevant 90th percentile 0.11, 99th 0.26), so its cutoff is 0.15.
NEIGHBOUR_COSINE = {"minilm": 0.3, "use-multilingual": 0.15}


def min_similarity(settings: Settings) -> float | None:
    """The similarity cutoff of the kNN half: the configured one, or for `auto` the text encoder's (None, the
    whole window, for an encoder without a measured cutoff)."""
    chosen = settings.search.min_similarity
    return NEIGHBOUR_COSINE.get(settings.encoders.text_model) if chosen == "auto" else chosen


def limits(settings: Settings) -> Limits:
    return Limits(max_size=settings.search.max_size, max_window=settings.search.max_window)


def known_names(settings: Settings, store: Store, query: SearchQuery) -> Known:
    """The numeric attributes the catalog declares, the keyword attributes its products have and the tag
    families it holds (a path-valued family's levels too); the store is asked only about the kinds of name
    `query` uses (keyword attributes: it reads every product's attributes)."""
    numeric = frozenset(settings.catalog.numeric_attributes)
    attributes = frozenset(store.attribute_names() - numeric) if query.attributes or query.attribute_facets else frozenset()
    named = {*query.filters, *query.facets, *([query.diversity.family] if query.diversity and query.diversity.family else [])}
    return Known(numeric=numeric, attributes=attributes, families=searchable_families(store, named) if named else None)


def searchable_families(store: Store, named: set[str]) -> frozenset[str]:
    """The tag families search knows: the store's, and the levels of the path-valued ones among `named`
    (`category@2`: only those families' values are read)."""
    families = store.families()
    for base in {n.rpartition(LEVEL_MARK)[0] for n in named - families if LEVEL_MARK in n} & families:
        families |= {level for value in store.values_of(base) for level, _ in level_values(base, value)}
    return frozenset(families)


def query_model(settings: Settings, encoders: Encoders) -> TaggerModel | None:
    """The tagger that understands queries: the workspace's current model, or None while there is none (or it
    was trained for other encoders): search then runs without query tags."""
    try:
        return load_checked_model(Workspace(settings.workspace).models_dir, encoders, settings.index)
    except Conflict:  # none trained yet, or trained for other encoders (`StaleModelError`)
        return None


def run_search(request: SearchRequest, settings: Settings, store: Store, backend: SearchBackend,
               encoders: Encoders, model: TaggerModel | None) -> SearchAnswer:
    """The whole storefront search: checks, query understanding, encoding, retrieval, re-rank, highlights.
    `model` None: no query tags (none trained yet)."""
    query = build_query(request, settings.search.boost_weight)
    bounds, known = limits(settings), known_names(settings, store, query)
    check_query(query, bounds, known)  # before the encoder and the tagger run
    if not has_words(query.text):
        results = storefront.search(backend, query, bounds, known, request.cursor)
        return SearchAnswer(results, hint=no_match_hint(results, query, store, backend))
    mode = request.query_tags or settings.search.query_tags
    vector = encoders.text.encode([query.text], query=True)[0]
    tags = understand(model, query.text, vector, mode) if model is not None else []
    query = applied(replace(query, vector=vector, min_similarity=min_similarity(settings)), tags, mode)
    results = storefront.search(backend, query, bounds, known, request.cursor)
    unapplied = [t for t in tags if t.value not in query.filters.get(t.family, ())]  # not suggested twice
    return SearchAnswer(results, tags, as_filters(unapplied) if mode == "suggest" else {},
                        no_match_hint(results, query, store, backend))


def no_match_hint(results: SearchResults, query: SearchQuery, store: Store, backend: SearchBackend) -> str | None:
    """Why nothing matched, when the reason is the workspace or a filter value rather than the query's words."""
    if results.total:
        return None
    return empty_index_hint(store, backend) or unknown_value_hint(query, store)


def unknown_value_hint(query: SearchQuery, store: Store) -> str | None:
    """The first filter value no product has: values match exactly, case included, so the hint names the
    catalog's closest value ("Jeans" for "jeans")."""
    chosen = [("tag family", f, v, store.values_of) for f, v in sorted(query.filters.items()) if LEVEL_MARK not in f]
    chosen += [("attribute", a, v, store.attribute_values) for a, v in sorted(query.attributes.items())]
    for kind, name, values, known_of in chosen:
        known = known_of(name)
        for value in values:
            if value in known:
                continue
            folded: dict[str, list[str]] = {}
            for k in sorted(known):
                folded.setdefault(k.casefold(), []).append(k)
            close = difflib.get_close_matches(value.casefold(), sorted(folded), n=1, cutoff=0.6)
            guess = f" (did you mean {' or '.join(map(repr, folded[close[0]]))}?)" if close else ""
            return f"no product has {kind} {name} = {value!r}: values match exactly, case included{guess}"
    return None


def empty_index_hint(store: Store, backend: SearchBackend) -> str | None:
    """What to run when nothing matched because the index holds nothing while the store holds products: `ingest`
    fills the store only; `tag` (and `reindex`, `feedback`) fill the index."""
    if backend.count():
        return None
    products = store.count_products()
    return (f"nothing is indexed yet ({products} products in the store): run `shoptag tag` (after `shoptag train`) "
            "to tag and index them, or `shoptag reindex` to index them untagged") if products else None
