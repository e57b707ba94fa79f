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


def documents(data: FashionVectors, limit: int) -> list:
    """The first `limit` products as search documents: title, catalog tags (score 1, source manual), vectors."""
    from shoptag.indexer.documents import DocTag, SearchDoc

    return [
        SearchDoc(id=pid, title=text, tags={f: [DocTag(v, 1.0, "manual") for v in vs] for f, vs in tags.items()},
                  text_vector=vector, fused_vector=vector, content_hash=pid, text_model=data.encoders.text.model_id,
                  attributes=attributes)
        for pid, text, tags, vector, attributes in zip(data.ids[:limit], data.texts, data.tags, data.vectors,
                                                        data.attributes)
    ]


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docs", type=int, default=2000, help="documents to bulk-index (quick: 500)")
    parser.add_argument("--storefront-docs", type=int, default=None,
                        help="documents the storefront query is timed on (default: the whole catalog)")


def main() -> None:
    args = parse_args(__doc__, options)
    from shoptag.indexer.backends import VectorDims, open_backend

    output = Output()
    data = fashion_vectors(args.work, args.data_dir, catalog_limit(args.quick), "cpu")
    docs = documents(data, 500 if args.quick else args.docs)
    dim = data.encoders.text.dim
    load = workload(data.texts[: len(docs)], data.ids[: len(docs)], data.encoders.text, 20 if args.quick else 50)
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
            everything = documents(data, args.storefront_docs or len(data.ids))
            if len(everything) > len(docs):
                report = backend.reindex(everything)
                if not report.ok:
                    raise RuntimeError(f"{len(report.failed)} documents failed, first: {report.failed[0]}")
            measure_storefront(output, "elasticsearch (noida-db)", backend, load, len(everything),
                               5 if args.quick else STOREFRONT_SAMPLES)
        finally:
            backend.close()
    output.write(args.out)


if __name__ == "__main__":
    main()
