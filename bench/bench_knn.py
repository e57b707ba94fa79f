"""Index build and kNN tag propagation on the real MiniLM vectors of the fashion catalog.

80% of the products (a seeded shuffle) are the labelled set the FAISS index holds; the other 20% are tagged by
the kNN vote of `shoptag.tagger.model` (`neighbours` with 2k candidates, then `knn_scores` per tag family,
exactly what `score_sources` does for its kNN source). Products tagged/s covers both steps for all families.
"""

from __future__ import annotations

import numpy as np

from bench_common import Output, Timer, catalog_limit, fashion_vectors, parse_args

LABELLED_SHARE = 0.8
KNN_K = 20
BATCH = 1000
TEMPERATURE = 0.05


def main() -> None:
    args = parse_args(__doc__)
    from shoptag.vectors.faiss_index import VectorIndex, gpu_available
    from shoptag.tagger.model import key_rows, knn_scores, neighbours
    from shoptag.tagger.vocab import build_vocabs

    output = Output()
    if args.device == "cuda" and not gpu_available():
        output.notes.append("faiss here has no GPU support (faiss-cpu): kNN runs on the CPU, no cuda figure")
        output.write(args.out)
        return
    data = fashion_vectors(args.work, args.data_dir, catalog_limit(args.quick), args.device)
    order = np.random.default_rng(0).permutation(len(data.ids))
    cut = int(LABELLED_SHARE * len(order))
    labelled, queries = order[:cut], order[cut:]
    labelled_ids = [data.ids[i] for i in labelled]

    with Timer() as build:
        index = VectorIndex.build(labelled_ids, data.vectors[labelled], use_gpu=args.device == "cuda")
    output.add("index+knn", "index build", len(labelled) / build.seconds, "vectors/s", args.device, len(labelled),
               {"seconds": build.seconds, "factory": index.factory, "dim": index.dim})

    vocabs = build_vocabs([data.tags[i] for i in labelled])
    labels = {family: vocab.label_matrix([data.tags[i].get(family) for i in labelled]) for family, vocab in vocabs.items()}
    rows_of_keys = key_rows(index, labelled_ids)
    with Timer() as tagging:
        for start in range(0, len(queries), BATCH):
            rows = queries[start : start + BATCH]
            nb_rows, nb_sims = neighbours(index, rows_of_keys, data.vectors[rows], [data.ids[i] for i in rows], 2 * KNN_K)
            for family_labels in labels.values():
                knn_scores(nb_rows, nb_sims, family_labels, KNN_K, TEMPERATURE)
    output.add("index+knn", "kNN propagation", len(queries) / tagging.seconds, "products tagged/s", args.device,
               len(queries), {"seconds": tagging.seconds, "families": len(labels), "k": KNN_K, "batch": BATCH,
                              "index_size": len(labelled), "factory": index.factory})
    output.write(args.out)


if __name__ == "__main__":
    main()
