"""Search and "similar" latency, p50/p99, through `open_backend` (the embedded SQLite FTS5 + FAISS backend)
over the fashion catalog, one query at a time as a storefront sends them.

Queries are two or three words cut from random product titles; their vectors come from the catalog's text
encoder before timing starts (query encoding is an encoder cost, measured by `bench_encoders`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench_common import Output, add_latency, catalog_limit, fashion_vectors, latencies, parse_args

FILTER = {"gender": ["Men"]}
FACETS = ("articleType", "baseColour")
STOREFRONT_SAMPLES = 20  # the storefront query on noida-db at 44k takes seconds each (brute force)


@dataclass
class Workload:
    """The queries every backend is timed with."""

    texts: list[str]
    vectors: np.ndarray
    similar_ids: list[str]


def workload(titles: list[str], ids: list[str], encoder, count: int) -> Workload:
    """`count` short queries and `count` product ids, drawn with a fixed seed."""
    rng = np.random.default_rng(1)
    texts = []
    for row in rng.choice(len(titles), count, replace=len(titles) < count):
        words = titles[row].split()
        width = int(rng.integers(2, 4))
        start = int(rng.integers(0, max(1, len(words) - width + 1)))
        texts.append(" ".join(words[start : start + width]))
    similar_ids = [ids[i] for i in rng.choice(len(ids), count, replace=len(ids) < count)]
    return Workload(texts, encoder.encode(texts, query=True), similar_ids)


def storefront_query(load: Workload, i: int):
    """What a storefront page asks: hybrid text + vector, a tag filter, a numeric range, two tag facets and a
    range facet, page 3 of 24 hits, with the default similarity cutoff of the kNN half."""
    from shoptag.indexer.documents import SearchQuery
    from shoptag.pipeline.search import NEIGHBOUR_COSINE

    return SearchQuery(text=load.texts[i], vector=load.vectors[i], filters=FILTER, ranges={"year": (2011.0, 2016.0)},
                       facets=FACETS, range_facets={"year": (2012.0, 2014.0, 2016.0)}, offset=48, size=24,
                       min_similarity=NEIGHBOUR_COSINE["minilm"])


def measure_storefront(output: Output, benchmark: str, backend, load: Workload, n: int, samples: int) -> None:
    """p50/p99 of the storefront query (`storefront_query`) through the storefront layer (checks, paging)."""
    from shoptag.indexer import storefront
    from shoptag.indexer.paging import Known, Limits

    known = Known(numeric=frozenset({"year"}), attributes=frozenset())
    rows = list(range(min(samples, len(load.texts))))
    seconds = latencies(lambda i: storefront.search(backend, storefront_query(load, i), Limits(), known), rows)
    add_latency(output, benchmark, "storefront: hybrid + tag filter + range + 3 facets, page 3", seconds, "cpu", n)


def measure(output: Output, benchmark: str, backend, load: Workload, n: int) -> None:
    """p50/p99 of text, hybrid, filtered hybrid with facets, and similar queries against `backend`."""
    from shoptag.indexer.documents import SearchQuery

    cases = {
        "search text": lambda i: SearchQuery(text=load.texts[i]),
        "search hybrid": lambda i: SearchQuery(text=load.texts[i], vector=load.vectors[i]),
        "search hybrid+filter+facets": lambda i: SearchQuery(
            text=load.texts[i], vector=load.vectors[i], filters=FILTER, facets=FACETS),
    }
    rows = list(range(len(load.texts)))
    for name, query in cases.items():
        add_latency(output, benchmark, name, latencies(lambda i: backend.search(query(i)), rows), "cpu", n)
    add_latency(output, benchmark, "similar k=10", latencies(lambda pid: backend.similar(pid, 10), load.similar_ids),
                "cpu", n)


def main() -> None:
    args = parse_args(__doc__)
    from shoptag.indexer.backends import VectorDims, open_backend
    from shoptag.pipeline.reindex import reindex
    from shoptag.pipeline.workspace import Workspace

    output = Output()
    data = fashion_vectors(args.work, args.data_dir, catalog_limit(args.quick), args.device)
    dim = data.encoders.text.dim
    backend = open_backend(data.settings, VectorDims(text=dim, image=None, fused=dim))
    try:
        if backend.count() != len(data.ids):  # bench_reindex fills it; alone, this fills it
            store = Workspace(data.settings.workspace).open_store()
            try:
                reindex(data.settings, store, data.encoders, backend, show_progress=False)
            finally:
                store.close()
        load = workload(data.texts, data.ids, data.encoders.text, 20 if args.quick else 100)
        measure(output, "search (embedded)", backend, load, len(data.ids))
        measure_storefront(output, "search (embedded)", backend, load, len(data.ids), len(load.texts))
    finally:
        backend.close()
    output.write(args.out)


if __name__ == "__main__":
    main()
