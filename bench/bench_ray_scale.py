"""The kNN tagging stage on the local engine and on Ray (a local cluster), at catalog sizes the store's own run
cannot reach on this machine: products tagged/s, and the peak memory of the driver and of each worker.

A catalog (synthetic unit vectors of `bench_scaling.synthetic`, or the real MiniLM vectors of the fashion catalog)
is split into a labelled fifth, which the FAISS index holds (`choose_factory` picks its type), and the rest, of
which `--queries` products are tagged: `neighbours` (2k candidates) + `knn_scores` for one 50-value family (the
synthetic catalog) or all seven families (fashion), in batches of 1,000 — what `score_sources` does for its kNN
source. Locally: in this process (faiss on every core). On Ray: the query vectors go to the object store in blocks of 1,000, an actor
pool (`--workers`) receives the index and labels once (`ray.put`) and tags the blocks; the driver iterates the
results (a count per block), so it never gathers them. Ray's rate is timed from the first result on (the actors'
start-up, importing the tagger and receiving the index, is reported apart as `start_up_s`). One engine and catalog per process, so each peak is its own.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from bench_common import Output, Timer, fashion_vectors, parse_args
from bench_scaling import synthetic

LABELLED_SHARE = 0.2
KNN_K = 20
BATCH = 1000
TEMPERATURE = 0.05
TAG_VALUES = 50
BLOCK = 10_000  # query vectors per object-store block: the unit the actors share out


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", default="synthetic", choices=("synthetic", "fashion"))
    parser.add_argument("--size", type=int, default=100_000, help="synthetic catalog size")
    parser.add_argument("--queries", type=int, default=100_000, help="products tagged (at most the unlabelled ones)")
    parser.add_argument("--engine", default="local", choices=("local", "ray"))
    parser.add_argument("--workers", type=int, default=2, help="Ray actors (one per core)")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def tag_block(index, rows_of_keys, labels: dict, vectors: np.ndarray) -> int:
    """Tag one block of query vectors (no ids: none of them is in the index); how many were tagged."""
    from shoptag.tagger.model import knn_scores, neighbours

    nb_rows, nb_sims = neighbours(index, rows_of_keys, vectors, [None] * len(vectors), 2 * KNN_K)
    for family_labels in labels.values():
        knn_scores(nb_rows, nb_sims, family_labels, KNN_K, TEMPERATURE)
    return len(vectors)


class BlockTagger:
    """A Ray actor holding the index and labels it received once through the object store."""

    def __init__(self, shared: list) -> None:
        import faiss
        import ray

        faiss.omp_set_num_threads(1)  # one actor per core
        self.index, self.rows_of_keys, self.labels = ray.get(shared[0])

    def __call__(self, batch: dict) -> dict:
        tagged = tag_block(self.index, self.rows_of_keys, self.labels, np.stack(batch["data"]).astype(np.float32))
        return {"tagged": np.array([tagged]), "peak_mb": np.array([peak_mb()])}


def raw_index(index):
    """The faiss index under `VectorIndex`'s id map, set to search with its nprobe / efSearch."""
    import faiss

    from shoptag.vectors.index_choice import set_search_params

    inner = faiss.downcast_index(index._index.index)
    set_search_params(inner, index.nprobe, index.ef_search)
    return inner


def raw_search_rate(index, query_vectors: np.ndarray) -> float:
    """Queries/s of the same faiss index, same search parameters, same batches and k, with nothing around it
    (not even faiss's id map): the bound of the kNN stage."""
    searcher = raw_index(index)
    with Timer() as raw:
        for s in range(0, len(query_vectors), BATCH):
            searcher.search(query_vectors[s : s + BATCH], 2 * KNN_K)
    return len(query_vectors) / raw.seconds


def recall_at_10(index, labelled_vectors: np.ndarray, query_vectors: np.ndarray) -> float:
    """Recall@10 of the index against exact inner-product search, over a sample of 1,000 of the queries."""
    import faiss

    exact = faiss.IndexFlatIP(labelled_vectors.shape[1])
    exact.add(labelled_vectors)
    sample = query_vectors[:1000]
    _, truth = exact.search(sample, 10)
    _, got = raw_index(index).search(sample, 10)  # positions in the order added: the exact index's rows
    return float(np.mean([len(set(t) & set(g)) / 10 for t, g in zip(truth.tolist(), got.tolist())]))


def catalog(args: argparse.Namespace) -> tuple[np.ndarray, list[dict], int]:
    """Vectors, the tag rows of each product (family -> values), and the catalog size."""
    if args.catalog == "fashion":
        data = fashion_vectors(args.work, args.data_dir, None, "cpu")
        return data.vectors, data.tags, len(data.ids)
    rng = np.random.default_rng(3)
    vectors = synthetic(args.size, rng)
    values = rng.integers(0, TAG_VALUES, args.size)
    return vectors, [{"family": [f"v{v}"]} for v in values], args.size


def main() -> None:
    args = parse_args(__doc__, options)
    import scipy.sparse as sp

    from shoptag.tagger.model import key_rows
    from shoptag.tagger.vocab import build_vocabs
    from shoptag.vectors.faiss_index import VectorIndex

    output = Output()
    vectors, tags, n = catalog(args)
    order = np.random.default_rng(0).permutation(n)
    cut = int(LABELLED_SHARE * n)
    labelled, queries = np.sort(order[:cut]), order[cut:][: args.queries]
    with Timer() as build:
        index = VectorIndex.build([str(i) for i in labelled], vectors[labelled])
    vocabs = build_vocabs([tags[i] for i in labelled])
    labels = {f: sp.csr_matrix(v.label_matrix([tags[i].get(f) for i in labelled])) for f, v in vocabs.items()}
    rows_of_keys = key_rows(index, [str(i) for i in labelled])
    query_vectors = vectors[queries]
    labelled_vectors = vectors[labelled] if args.engine == "local" else None
    del vectors
    name, extra = f"ray-scale {args.catalog}", {"factory": index.factory, "labelled": cut, "families": len(labels),
                                                  "build_s": build.seconds}
    if args.engine == "local":
        with Timer() as run:
            tagged = sum(tag_block(index, rows_of_keys, labels, query_vectors[s : s + BATCH])
                         for s in range(0, len(query_vectors), BATCH))
        workers_mb = 0.0
        # the raw side runs after ours, keys in faiss's int ids: the index and batches are the same
        raw_rate = raw_search_rate(index, query_vectors)
        extra["recall@10"] = recall_at_10(index, labelled_vectors, query_vectors)
        extra["nprobe"] = index.nprobe
    else:
        import ray

        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        shared = [ray.put((index, rows_of_keys, labels))]
        blocks = [query_vectors[s : s + BLOCK] for s in range(0, len(query_vectors), BLOCK)]
        started = time.perf_counter()
        with Timer() as run:
            ds = ray.data.from_numpy(blocks).map_batches(
                BlockTagger, fn_constructor_kwargs={"shared": shared}, batch_size=BATCH,
                compute=ray.data.ActorPoolStrategy(size=args.workers), num_cpus=1,
            )
            tagged, workers_mb, first = 0, 0.0, None
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                if first is None:  # the actors have started: the steady rate is timed from here
                    first, first_tagged = time.perf_counter(), int(batch["tagged"].sum())
                tagged += int(batch["tagged"].sum())
                workers_mb = max(workers_mb, float(batch["peak_mb"].max()))
        steady = (tagged - first_tagged) / (time.perf_counter() - first) if tagged > first_tagged else 0.0
        extra["start_up_s"] = first - started
        ray.shutdown()
    rate = tagged / run.seconds if args.engine == "local" else steady
    extra.update({"seconds": run.seconds, "queries": int(tagged), "engine": args.engine,
                  "workers": args.workers if args.engine == "ray" else 1})
    output.add(name, f"kNN tagging ({args.engine})", rate, "products tagged/s", "cpu", n, extra)
    if args.engine == "local":
        output.add(name, "raw faiss search (same index, batches, k)", raw_rate, "queries/s", "cpu", n, extra)
        output.add(name, "kNN tagging / raw faiss search", rate / raw_rate, "ratio", "cpu", n, extra)
    output.add(name, f"driver peak RSS ({args.engine})", peak_mb(), "MB", "cpu", n, extra)
    if args.engine == "ray":
        output.add(name, "worker peak RSS (ray, largest)", workers_mb, "MB", "cpu", n, extra)
    output.notes.append(f"{args.catalog} {n}: {index.factory} over {cut} labelled, {tagged} tagged")
    output.write(args.out)


if __name__ == "__main__":
    main()
