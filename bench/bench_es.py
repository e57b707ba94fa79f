"""Elasticsearch bulk indexing docs/s (and search/similar latency) against a noida-db process started and
stopped here, with the fashion catalog's real vectors and catalog tags.

noida-db is a local binary speaking the Elasticsearch 8.15 API; its figures describe it, not a real
Elasticsearch cluster (run with ``SHOPTAG_ES__URL`` pointing at one to compare).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench_common import FashionVectors, Output, Timer, catalog_limit, fashion_vectors, parse_args
from bench_search import STOREFRONT_SAMPLES, measure, measure_storefront, workload

START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def noida(data_dir: Path) -> Iterator[str]:
    """A fresh noida-db serving the Elasticsearch API on a free port; yields its URL, stops it on exit."""
    binary = shutil.which("noida-db", path=str(Path(sys.executable).parent)) or shutil.which("noida-db")
    if binary is None:
        raise RuntimeError("noida-db is not installed (pip install noida-db)")
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (data_dir.parent / f"{data_dir.name}.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, "start", "--only", "elasticsearch", "--host", "127.0.0.1", "--elasticsearch-port", str(port),
             "--data-dir", str(data_dir)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # its own group: stop all it starts
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"noida-db did not come up on {url}; see {log.name}")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/_cluster/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def documents(data: FashionVectors, limit: int, start: int = 0) -> list:
    """Products `start` to `limit` as search documents: title, catalog tags (score 1, source manual), vectors."""
    from shoptag.indexer.documents import DocTag, SearchDoc

    rows = zip(data.ids[start:limit], data.texts[start:limit], data.tags[start:limit], data.vectors[start:limit],
               data.attributes[start:limit])
    return [
        SearchDoc(id=pid, title=text, tags={f: [DocTag(v, 1.0, "manual") for v in vs] for f, vs in tags.items()},
                  text_vector=vector, fused_vector=vector, content_hash=pid, text_model=data.encoders.text.model_id,
                  attributes=attributes)
        for pid, text, tags, vector, attributes in rows
    ]


def bytes_per_document(output: Output, docs: list) -> None:
    """JSON bytes of a document as the bulk body carries it: float64 text of text and fused vectors (before)
    against float32 decimals of the text vector only (after; base64 on 9.3+ servers)."""
    import json

    import numpy as np

    from shoptag.indexer.es.reindex import doc_source

    def size(source: dict) -> int:
        return len(json.dumps(source, ensure_ascii=False).encode())

    before, after, base64 = [], [], []
    for doc in docs:
        old = doc_source(doc, "v1")
        for kind in ("text", "fused"):
            old[f"{kind}_vector"] = np.asarray(getattr(doc, f"{kind}_vector"), dtype=np.float64).tolist()
        before.append(size(old))
        after.append(size(doc_source(doc, "v1", fused=False)))
        base64.append(size(doc_source(doc, "v1", fused=False, as_base64=True)))
    for name, sizes in (("before (float64 text, text + fused)", before), ("after (float32, text only)", after),
                        ("after, 9.3+ (base64 float32)", base64)):
        output.add("elasticsearch (noida-db)", f"bulk bytes per document, {name}", sum(sizes) / len(sizes), "bytes",
                   "cpu", len(docs))


def es_backend(settings, dims, work: Path, *, similar: bool = True, **es_changes):
    """An `ESBackend` as `shoptag reindex` opens it: with the FAISS index `similar` is served from, in `work`
    (`similar=False`: without it, the Elasticsearch stream alone)."""
    from shoptag.indexer.es.backend import ESBackend
    from shoptag.indexer.neighbours import Neighbours

    shutil.rmtree(work, ignore_errors=True)
    return ESBackend(settings.es.model_copy(update=es_changes), dims, numeric=settings.catalog.numeric_attributes,
                     neighbours=Neighbours(work, dims, index=settings.index) if similar else None)


def bulk_against_raw(output: Output, settings, dims, docs: list, rounds: int, work: Path) -> None:
    """`ESBackend.reindex` (lock, templates, build settings, FAISS for `similar`, checks, swap) against raw
    `helpers.streaming_bulk` of the same documents (the same sources, into an index with the same body),
    alternated in one run."""
    from elasticsearch import helpers

    from shoptag.indexer.es.mapping import index_body
    from shoptag.indexer.es.reindex import doc_source

    numeric = settings.catalog.numeric_attributes
    backend = es_backend(settings, dims, work)
    client = backend._client
    times: dict[str, list[float]] = {"shoptag": [], "raw": []}
    try:
        for round_ in range(rounds):
            for side in ("shoptag", "raw") if round_ % 2 == 0 else ("raw", "shoptag"):
                with Timer() as timer:
                    if side == "shoptag":
                        if not backend.reindex(docs).ok:
                            raise RuntimeError("reindex failed")
                    else:
                        index = f"bench-raw-{round_}"
                        client.indices.create(index=index, **index_body("v1", dims, settings.es.vector_index_type,
                                                                         numeric=numeric))
                        actions = ({"_index": index, "_id": d.id,
                                    "_source": doc_source(d, "v1", fused=False, numeric=numeric)} for d in docs)
                        for ok, item in helpers.streaming_bulk(client, actions, chunk_size=settings.es.bulk_chunk_size):
                            if not ok:
                                raise RuntimeError(f"raw bulk failed: {item}")
                        client.indices.refresh(index=index)
                times[side].append(timer.seconds)
                if side == "raw":
                    client.indices.delete(index=index)
    finally:
        backend.close()
    rate = {side: len(docs) / min(seconds) for side, seconds in times.items()}
    output.add("elasticsearch (noida-db)", "reindex docs/s vs raw streaming_bulk", rate["shoptag"] / rate["raw"], "x",
               "cpu", len(docs), {"shoptag_docs_per_s": rate["shoptag"], "raw_docs_per_s": rate["raw"],
                                  "rounds": rounds, "seconds": times})


def reindex_peak_memory(output: Output, settings, dims, data: FashionVectors, sizes: list[int], work: Path) -> None:
    """Peak Python memory (tracemalloc) of a full reindex fed by a generator, at several catalog sizes, twice:
    as `shoptag reindex` runs it, and the Elasticsearch stream alone. The stream is flat when documents are not
    held; the whole reindex also builds the FAISS index `similar` answers from, which holds every product's
    vector by design, and saving it serialises one copy (numpy buffers count in tracemalloc, FAISS's own
    memory does not)."""
    import tracemalloc

    for similar, what in ((True, "reindex peak Python memory"),
                          (False, "reindex peak Python memory, Elasticsearch stream alone")):
        backend = es_backend(settings, dims, work, similar=similar, bulk_chunk_size=100)  # sizes well above one chunk
        try:
            for size in sizes:
                lazy = (doc for chunk in range(0, size, 500) for doc in documents(data, min(size, chunk + 500), chunk))
                tracemalloc.start()
                if not backend.reindex(lazy).ok:
                    raise RuntimeError("reindex failed")
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                output.add("elasticsearch (noida-db)", what, peak / 2**20, "MiB", "cpu", size,
                           {"measured_with": "tracemalloc; documents streamed from a generator", "bulk_chunk_size": 100,
                            "similar_products_index": similar})
        finally:
            backend.close()


def storefront(output: Output, settings, dim: int, load, n: int, samples: int) -> None:
    """The storefront query's latency on noida-db, through a client with a long read timeout: noida-db searches
    by brute force, and at the whole catalog one filtered, faceted hybrid query can take longer than a
    storefront's 30 s. A query that still times out is a note, not a lost run."""
    from shoptag.core.errors import ShoptagError
    from shoptag.indexer.backends import VectorDims, open_backend

    slow = settings.model_copy(update={"es": settings.es.model_copy(update={"request_timeout": 600.0})})
    backend = open_backend(slow, VectorDims(text=dim, image=None, fused=dim))
    try:
        measure_storefront(output, "elasticsearch (noida-db)", backend, load, n, samples)
    except ShoptagError as exc:
        output.notes.append(f"storefront query on noida-db at {n:,} documents failed: {exc}")
    finally:
        backend.close()


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docs", type=int, default=2000, help="documents the search latencies are timed on (quick: 500)")
    parser.add_argument("--bulk-docs", type=int, default=None,
                        help="documents of the reindex-vs-raw-bulk comparison (default: the whole catalog; quick: 500)")
    parser.add_argument("--storefront-docs", type=int, default=None,
                        help="documents the storefront query is timed on (default: the whole catalog)")


def main() -> None:
    args = parse_args(__doc__, options)
    from shoptag.indexer.backends import VectorDims, open_backend

    output = Output()
    data = fashion_vectors(args.work, args.data_dir, catalog_limit(args.quick), "cpu")
    docs = documents(data, 500 if args.quick else args.docs)
    dim = data.encoders.text.dim
    load = workload(data.texts[: len(docs)], data.ids[: len(docs)], data.encoders.text, 20 if args.quick else 25)
    with noida(args.work / "noida") as url:
        settings = data.settings.model_copy(update={"es": data.settings.es.model_copy(update={"url": url})})
        backend = open_backend(settings, VectorDims(text=dim, image=None, fused=dim))
        try:
            with Timer() as bulk:
                report = backend.reindex(docs)
            if not report.ok:
                raise RuntimeError(f"{len(report.failed)} documents failed, first: {report.failed[0]}")
            output.add("elasticsearch (noida-db)", "bulk reindex", len(docs) / bulk.seconds, "docs/s", "cpu", len(docs),
                       {"seconds": bulk.seconds, "chunk": settings.es.bulk_chunk_size,
                        "vector_index_type": settings.es.vector_index_type, "includes": "new index, bulk, alias swap"})
            measure(output, "elasticsearch (noida-db)", backend, load, len(docs))
            bytes_per_document(output, docs)
            output.write(args.out)  # each phase's figures kept as it ends: a later phase may fail or be stopped
            bulk = docs if args.quick else documents(data, args.bulk_docs or len(data.ids))
            bulk_against_raw(output, settings, VectorDims(text=dim, image=None, fused=dim), bulk, 3,
                             args.work / "es-neighbours-bench")
            output.write(args.out)
            del bulk
            reindex_peak_memory(output, settings, VectorDims(text=dim, image=None, fused=dim), data,
                                sorted({len(data.ids) // 4, len(data.ids)}), args.work / "es-neighbours-bench")
            output.write(args.out)
            everything = documents(data, args.storefront_docs or len(data.ids))
            if backend.count() != len(everything):  # the last memory run leaves the whole catalog there
                report = backend.reindex(everything)
                if not report.ok:
                    raise RuntimeError(f"{len(report.failed)} documents failed, first: {report.failed[0]}")
            storefront(output, settings, dim, load, len(everything), 5 if args.quick else STOREFRONT_SAMPLES)
        finally:
            backend.close()
    output.write(args.out)


if __name__ == "__main__":
    main()
