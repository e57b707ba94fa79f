"""Scaling of kNN tagging and "similar" with the catalog size, on synthetic unit vectors (dim 384, clustered
around 1,000 random centres like product categories) with one synthetic 50-value tag family.

One size per process (``--size``), so `run.py` records the peak memory of each size on its own. The index
type is what `choose_factory` picks for that size; `VectorIndex` trains an IVF index on a sample of
`TRAIN_PER_LIST` vectors per inverted list (faiss's own cap is 256 per list, i.e. every vector at 1M); the
build time includes that training, and the sample size is noted in the figures.
"""

from __future__ import annotations

import argparse
import resource

import numpy as np

from bench_common import Output, Timer, add_latency, latencies, parse_args

DIM = 384
CENTRES = 1000
NOISE = 0.6
TAG_VALUES = 50
KNN_K = 20
TAG_BATCH = 1000
SEARCH_BATCH = 100


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=10_000, help="number of products")


def synthetic(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` unit vectors scattered around `CENTRES` random unit centres, built in chunks to bound memory."""
    centres = rng.standard_normal((CENTRES, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        block = centres[rng.integers(0, CENTRES, stop - start)]
        block += rng.standard_normal(block.shape, dtype=np.float32) * (NOISE / np.sqrt(DIM))
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def main() -> None:
    args = parse_args(__doc__, options)
    import faiss
    import scipy.sparse as sp

    from shoptag.vectors.faiss_index import VectorIndex, gpu_available
    from shoptag.vectors.index_choice import TRAIN_PER_LIST, choose_factory
    from shoptag.tagger.model import key_rows, knn_scores, neighbours

    output = Output()
    output.add("scaling", "RSS after imports", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "MB",
               args.device, args.size, {"why": "subtract from peak RSS for the memory the vectors and index take"})
    if args.device == "cuda" and not gpu_available():
        output.notes.append("faiss here has no GPU support (faiss-cpu): scaling runs on the CPU only")
        output.write(args.out)
        return
    n, device, name = args.size, args.device, "scaling"
    rng = np.random.default_rng(3)
    vectors = synthetic(n, rng)
    ids = [f"p{i}" for i in range(n)]
    factory = choose_factory(n, DIM)

    with Timer() as build:  # training included: VectorIndex samples TRAIN_PER_LIST vectors per IVF list
        index = VectorIndex.build(ids, vectors, factory, use_gpu=device == "cuda")
    trained_on = min(n, TRAIN_PER_LIST * index.nlist)
    output.add(name, "index build", build.seconds, "s", device, n,
               {"factory": factory, "trained_on": trained_on, "nprobe": index.nprobe})

    queries = np.arange(0, n, max(1, n // (TAG_BATCH * 2)))
    labels = sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), rng.integers(0, TAG_VALUES, n))), shape=(n, TAG_VALUES))
    rows_of_keys = key_rows(index, ids)
    with Timer() as tagging:
        for start in range(0, len(queries), TAG_BATCH):
            rows = queries[start : start + TAG_BATCH]
            nb_rows, nb_sims = neighbours(index, rows_of_keys, vectors[rows], [ids[r] for r in rows], 2 * KNN_K)
            knn_scores(nb_rows, nb_sims, labels, KNN_K, 0.05)
    output.add(name, "kNN tagging", len(queries) / tagging.seconds, "products tagged/s", device, n,
               {"factory": factory, "queries": len(queries), "k": KNN_K, "batch": TAG_BATCH})

    batches = [queries[i : i + SEARCH_BATCH] for i in range(0, len(queries) - SEARCH_BATCH + 1, SEARCH_BATCH)]
    add_latency(output, name, f"kNN search k={KNN_K}, batch of {SEARCH_BATCH}",
                latencies(lambda rows: index.search(vectors[rows], KNN_K), batches), device, n)
    singles = queries[: 50 if args.quick else 200]
    similar = lambda row: index.search(vectors[row][None, :], KNN_K, exclude=[ids[row]])  # noqa: E731
    add_latency(output, name, f"similar (single query k={KNN_K})", latencies(similar, singles), device, n)
    if device == "cpu":  # OpenMP threads spin on a busy machine: one query gains nothing from a second thread
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        add_latency(output, name, f"similar (single query k={KNN_K}), faiss 1 thread", latencies(similar, singles), device, n)
        faiss.omp_set_num_threads(threads)
    output.notes.append(f"{n}: {factory}" + (f", IVF trained on a sample of {trained_on}" if index.nlist else ""))
    output.write(args.out)


if __name__ == "__main__":
    main()
