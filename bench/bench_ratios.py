"""Each shoptag path against its raw library on the same data, in one run: medians and spread over alternated
repeats (ours, raw, raw, ours, ...), so load from other work on the machine hits both sides alike; every pair is
checked to give the same result. Writes ``bench/results/ratios.json`` and ``ratios.md`` beside the figures it hands
to `run.py`.

- **tag** (20k fashion products, 80 % of them labelled and so encoded by training, 20 % not): `pipeline.tag.tag`
  (retag all, into the embedded search index) against the raw work: encoding the uncached titles with the encoder
  class + one faiss search of every product. Warm: the 20 % arrive new before each run (no cached vectors, no
  search document; the retagged rest is unchanged, so its documents are not rewritten); cold: every product
  arrives new (empty embedding cache, empty search index) against encoding all titles. Plus the time of each
  stage of the warm runs.
- **kNN on IVF** (44k: 80 % labelled, 20 % queries, `IVF{nlist},SQ8`): `neighbours` + `knn_scores` of every family
  against the same faiss index's search + a numpy vote.
- **encode through the cache** against the encoder class (uncached titles, a fresh cache each time).
- **text search** and **hybrid search** (44k, embedded backend) against raw FTS5 top-10, and raw FTS5 + faiss +
  reciprocal rank fusion in Python; the raw side also fetches what every search answer carries (each hit's
  text, tag values, attributes and numbers, and the total count), in plain SQL.
- **recall@10** of the IVF/HNSW choices on the real MiniLM vectors (44k) against exact search.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bench_common import ROOT, Output, fashion_catalog_file, fashion_vectors, machine, parse_args

RESULTS = ROOT / "bench" / "results"
LABELLED_SHARE = 0.8
KNN_K = 20
TEMPERATURE = 0.05
QUERIES = 100
RRF_K = 60
# what a search answer carries beyond the ranked ids, so the raw side does it too (`SearchResults`: hits with
# their text, tag values, attributes and numbers, and the total of matching products)
HIT_WORK = "hit fields (title, description, tags, attributes, numbers) + total count"
PAIRS = ("encode", "knn", "search", "hybrid", "recall", "tag")


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=3, help="alternated repeats of each pair (at least 3)")
    parser.add_argument("--tag-products", type=int, default=20_000, help="catalog size of the tag runs")
    parser.add_argument("--encode-texts", type=int, default=4_000, help="titles of the encode-through-cache pair")
    parser.add_argument("--pairs", type=lambda text: set(text.split(",")), default=set(PAIRS),
                        help=f"comma-separated sections to run (default all): {','.join(PAIRS)}")
    parser.add_argument("--results", type=Path, default=None,
                        help="folder of ratios.json/.md (default bench/results; with only some --pairs, the scratch "
                             "folder, so a partial run never replaces the full figures)")


# ---- timing -----------------------------------------------------------------------------------------------------
def alternated(ours: Callable[[], object], raw: Callable[[], object], repeats: int,
               before: Callable[[], None] | None = None) -> tuple[list[float], list[float]]:
    """Seconds of `ours` and `raw`, `repeats` each, in the order ours, raw, raw, ours, ...; `before` runs untimed
    before every call (resetting caches)."""
    times: dict[str, list[float]] = {"ours": [], "raw": []}
    for r in range(repeats):
        for name in ("ours", "raw") if r % 2 == 0 else ("raw", "ours"):
            if before is not None:
                before()
            start = time.perf_counter()
            (ours if name == "ours" else raw)()
            times[name].append(time.perf_counter() - start)
    return times["ours"], times["raw"]


def row(name: str, ours: list[float], raw: list[float], goal: float, n: int, *, throughput: bool = False,
        raw_name: str = "raw", note: str = "") -> dict:
    """One pair: medians, spread (min–max), the ratio of medians and whether it meets `goal` (time ratio at most
    `goal`; with `throughput`, raw time / our time at least `goal`)."""
    ratio = statistics.median(raw) / statistics.median(ours) if throughput else statistics.median(ours) / statistics.median(raw)
    met = ratio >= goal if throughput else ratio <= goal
    return {"path": name, "raw": raw_name, "n": n, "ours_s": ours, "raw_s": raw,
            "ours_median_s": statistics.median(ours), "raw_median_s": statistics.median(raw),
            "ratio": ratio, "goal": f"{'≥' if throughput else '≤'} {goal}", "met": met,
            "ratio_kind": "throughput (raw time / ours)" if throughput else "time (ours / raw)", "note": note}


class Stages:
    """Wall time spent in named functions while active: each is wrapped where the tag path looks it up."""

    def __init__(self, targets: dict[str, tuple[object, str]]) -> None:
        self.targets = targets
        self.seconds = dict.fromkeys(targets, 0.0)

    @contextmanager
    def active(self) -> Iterator[None]:
        originals = {name: getattr(owner, attr) for name, (owner, attr) in self.targets.items()}
        for name, (owner, attr) in self.targets.items():
            setattr(owner, attr, self._timed(name, originals[name]))
        try:
            yield
        finally:
            for name, (owner, attr) in self.targets.items():
                setattr(owner, attr, originals[name])

    def _timed(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start
        return timed


# ---- tag ----------------------------------------------------------------------------------------------------------
def tag_workspace(args: argparse.Namespace, n: int):
    """A workspace of the first `n` fashion products, the first 80 % (seeded shuffle) with their catalog tags and
    a model trained on them; built once and reused. Returns (settings, ids of the unlabelled products)."""
    from shoptag.core.settings import load_settings
    from shoptag.pipeline.encode import Encoders
    from shoptag.pipeline.ingest import ingest
    from shoptag.pipeline.train import train
    from shoptag.pipeline.workspace import Workspace

    folder = args.work / f"ratios-tag-{n}"
    settings = load_settings(workspace=folder / "ws")
    records = [json.loads(line) for line in fashion_catalog_file(args.work, args.data_dir, n).read_text().splitlines()]
    order = np.random.default_rng(0).permutation(len(records))
    unlabelled = {records[i]["id"] for i in order[int(LABELLED_SHARE * len(records)):]}
    workspace = Workspace(settings.workspace)
    if not (workspace.models_dir / "current").is_file():
        catalog = folder / "catalog.jsonl"
        catalog.parent.mkdir(parents=True, exist_ok=True)
        catalog.write_text("".join(json.dumps({**r, "tags": {} if r["id"] in unlabelled else r["tags"]}) + "\n"
                                   for r in records))
        store = workspace.open_store()
        try:
            ingest(settings, store, catalog, show_progress=False)
            train(settings, store, Encoders(settings.encoders, workspace.cache_dir), show_progress=False)
        finally:
            store.close()
    return settings, sorted(unlabelled)


def forget_vectors(cache_path: Path, hashes: list[str]) -> None:
    """Remove these texts' vectors from the embedding cache: the next run encodes them again."""
    with sqlite3.connect(cache_path) as db:
        db.executemany("DELETE FROM embeddings WHERE content_hash = ?", [(h,) for h in hashes])


def measure_tag(args: argparse.Namespace, rows: list[dict], output: Output) -> dict:
    """Warm and cold `tag` against raw encode (+ faiss), and the stage breakdown of the warm runs."""
    import faiss

    import shoptag.pipeline.tag as tag_module
    import shoptag.tagger.head as head_module
    import shoptag.tagger.model as model_module
    from shoptag.pipeline.encode import Encoders
    from shoptag.pipeline.search_sync import backend_key, open_search
    from shoptag.pipeline.workspace import Workspace
    from shoptag.store.records import Store
    from shoptag.tagger.lexical import LexicalClassifier
    from shoptag.tagger.text_features import TextCounts

    n = args.tag_products
    settings, unlabelled = tag_workspace(args, n)
    workspace = Workspace(settings.workspace)
    encoders = Encoders(settings.encoders, workspace.cache_dir)
    store = workspace.open_store()
    search = {"backend": open_search(settings, encoders, set_aside_damaged=True)}  # a fresh one for each cold run
    try:
        products = store.products()
        titles = [p.text for p in products]
        unlabelled_set = set(unlabelled)
        uncached = [p for p in products if p.id in unlabelled_set]
        model = tag_module.load_checked_model(workspace.models_dir, encoders, settings.index)
        encoder = encoders.text
        encoder.encode(titles[:64])  # load the model before timing
        fused = encoder.encode(titles)  # text-only catalog: fused = text
        exact = faiss.IndexFlatIP(fused.shape[1])
        exact.add(fused[[i for i, p in enumerate(products) if p.id not in unlabelled_set]])

        raw_encode = encoder.encode  # the stage timer below wraps encoder.encode for tag's calls only

        def raw_warm() -> None:
            raw_encode([p.text for p in uncached])
            exact.search(fused, 2 * model.knn_k)

        def ours() -> None:
            tag_module.tag(settings, store, encoders, search["backend"], retag_all=True, show_progress=False)

        stages = Stages({
            "encode (encoder thread)": (encoder, "encode"),
            "vectors from the cache": (tag_module, "encode_products"),
            "kNN search": (model_module, "neighbours"),
            "kNN vote": (model_module, "knn_scores"),
            "head": (head_module, "predict_head"),
            "lexical: text counts": (TextCounts, "transform"),
            "lexical: classifiers": (LexicalClassifier, "predict_counts"),
            "fusion + calibration": (model_module, "apply_temperature"),
            "decide (incl. evidence)": (tag_module, "decide"),
            "evidence": (model_module, "_evidence"),
            "store writes": (Store, "set_model_tags"),
            "search sync (upsert)": (tag_module, "index_products"),
            "search converge": (tag_module, "converge"),
        })
        key = backend_key(settings, search["backend"])

        def arrive_new() -> None:
            """The unlabelled products arrive new: no cached vectors, no search document."""
            forget_vectors(workspace.cache_path, [p.text_hash for p in uncached])
            search["backend"].delete([p.id for p in uncached])
            store.set_indexed(key, {}, gone=[p.id for p in uncached])

        def new_catalog() -> None:
            """As before a catalog's first run: an empty embedding cache and an empty search index."""
            forget_vectors(workspace.cache_path, [p.text_hash for p in products])
            search["backend"].close()
            shutil.rmtree(workspace.search_dir)
            search["backend"] = open_search(settings, encoders)
            store.set_indexed(key, {}, replace_all=True)

        ours()  # first run fills the search index; the timed ones retag all
        with stages.active():
            warm_ours, warm_raw = alternated(ours, raw_warm, args.repeats, arrive_new)
        warm_total = sum(warm_ours)
        breakdown = {name: {"seconds": s / args.repeats, "share": s / warm_total} for name, s in stages.seconds.items()}
        rows.append(row("tag (warm: 80 % cached)", warm_ours, warm_raw, 2.0, n,
                        raw_name=f"encoder class on the {len(uncached):,} uncached titles + faiss IndexFlatIP search "
                                 f"of all {n:,} (k={2 * model.knn_k})"))
        cold_ours, cold_raw = alternated(ours, lambda: encoder.encode(titles), args.repeats, new_catalog)
        rows.append(row("tag (cold: empty cache and index)", cold_ours, cold_raw, 1.2, n,
                        raw_name=f"encoder class on all {n:,} titles"))
        tagged = store.read("SELECT COUNT(*) FROM tags WHERE source = 'model'")[0][0]
        output.notes.append(f"tag: {tagged:,} model tags written per run over {n:,} products")
    finally:
        search["backend"].close()
        store.close()
    return breakdown


# ---- kNN on IVF -------------------------------------------------------------------------------------------------
def raw_vote(keys: np.ndarray, sims: np.ndarray, dense: np.ndarray, labelled: np.ndarray, k: int,
             temperature: float) -> np.ndarray:
    """The kNN vote in plain numpy: the first `k` labelled neighbours, softmax(sim / T) weights, weighted labels."""
    ok = (keys >= 0) & labelled[np.maximum(keys, 0)]
    ok &= np.cumsum(ok, axis=1) <= k
    logits = np.where(ok, sims / temperature, -np.inf)
    top = logits.max(1, keepdims=True)
    weights = np.where(ok, np.exp(logits - np.where(np.isfinite(top), top, 0.0)), 0.0)
    weights /= np.maximum(weights.sum(1, keepdims=True), 1e-30)
    return np.einsum("nk,nkc->nc", weights, dense[np.maximum(keys, 0)]).astype(np.float32)


def measure_knn(data, rows: list[dict], repeats: int) -> None:
    from shoptag.tagger.model import key_rows, knn_scores, neighbours
    from shoptag.tagger.vocab import build_vocabs
    from shoptag.vectors.faiss_index import VectorIndex
    from shoptag.vectors.index_choice import nlist_for, set_search_params

    order = np.random.default_rng(0).permutation(len(data.ids))
    cut = int(LABELLED_SHARE * len(order))
    labelled, queries = order[:cut], order[cut:]
    labelled_ids = [data.ids[i] for i in labelled]
    factory = f"IVF{nlist_for(len(labelled))},SQ8"
    index = VectorIndex.build(labelled_ids, data.vectors[labelled], factory)
    vocabs = build_vocabs([data.tags[i] for i in labelled])
    labels = {f: v.label_matrix([data.tags[i].get(f) for i in labelled]) for f, v in vocabs.items()}
    dense = {f: np.asarray(m.todense(), dtype=np.float32) for f, m in labels.items()}
    has = {f: np.asarray(m.sum(1)).ravel() > 0 for f, m in labels.items()}
    rows_of_keys = key_rows(index, labelled_ids)  # keys are 0..n-1 in labelled order: raw needs no map
    assert (rows_of_keys == np.arange(len(labelled))).all()
    q_vectors, q_ids = data.vectors[queries], [data.ids[i] for i in queries]
    batch = 1000
    results: dict[str, dict] = {}

    def ours() -> None:
        out = {}
        for start in range(0, len(queries), batch):
            nb, sims = neighbours(index, rows_of_keys, q_vectors[start : start + batch], q_ids[start : start + batch],
                                  2 * KNN_K)
            out[start] = {f: knn_scores(nb, sims, m, KNN_K, TEMPERATURE)[0] for f, m in labels.items()}
            out[start]["sims"] = sims
        results["ours"] = out

    faiss_index = index._index  # the same faiss index, searched directly
    set_search_params(faiss_index, index.nprobe, index.ef_search)

    def raw() -> None:
        out = {}
        for start in range(0, len(queries), batch):
            sims, keys = faiss_index.search(q_vectors[start : start + batch], 2 * KNN_K)
            out[start] = {f: raw_vote(keys, sims, dense[f], has[f], KNN_K, TEMPERATURE) for f in labels}
            out[start]["sims"] = sims
        results["raw"] = out

    t_ours, t_raw = alternated(ours, raw, repeats)
    # Scores must agree, except in a row whose neighbours tie exactly (duplicate products have equal similarities):
    # ours fetches one more neighbour (the product itself may be among them), and faiss orders ties by the size of
    # its result heap, so a tie across the k-th labelled neighbour can pick another of the tied products.
    differ = tied = 0
    for s, ours_batch in results["ours"].items():
        raw_batch = results["raw"][s]
        for r in np.flatnonzero(np.any([np.abs(ours_batch[f] - raw_batch[f]).max(1) > 1e-5 for f in labels], axis=0)):
            same_sims = np.allclose(ours_batch["sims"][r], raw_batch["sims"][r], atol=1e-6)
            tie = same_sims and len(np.unique(np.round(ours_batch["sims"][r], 6))) < len(ours_batch["sims"][r])
            tied += tie
            differ += not tie
    note = ("scores identical" if not tied else
            f"scores identical except {tied} rows whose tied neighbours (equal similarity) came in another order")
    rows.append(row("kNN propagation on IVF", t_ours, t_raw, 1.1, len(queries),
                    raw_name=f"faiss {factory} nprobe {index.nprobe} search + numpy vote ({len(labels)} families)",
                    note=note if not differ else f"SCORES DIFFER in {differ} rows"))


# ---- encoding through the cache -----------------------------------------------------------------------------------
def measure_encode(data, rows: list[dict], args: argparse.Namespace) -> None:
    import tempfile

    from shoptag.tagger.embedding_cache import EmbeddingCache, encode_with_cache

    encoder = data.encoders.text
    texts = list(dict.fromkeys(data.texts))[: args.encode_texts]
    hashes = [f"bench-{i}" for i in range(len(texts))]
    encoder.encode(texts[:64])
    results: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(dir=args.work) as scratch:
        caches: list[EmbeddingCache] = []

        def fresh() -> None:
            for cache in caches:
                cache.close()
            path = Path(scratch) / f"cache-{len(caches)}.sqlite"
            caches.append(EmbeddingCache(path))

        def ours() -> None:
            results["ours"] = encode_with_cache(texts, hashes, model_id=encoder.model_id, dim=encoder.dim,
                                                encode=encoder.encode, cache=caches[-1],
                                                batch_size=data.settings.encoders.batch_size, length=len)[0]

        def raw() -> None:
            results["raw"] = encoder.encode(texts)

        t_ours, t_raw = alternated(ours, raw, args.repeats, fresh)
        caches[-1].close()
    same = np.array_equal(results["ours"], results["raw"])
    rows.append(row("encode through the cache", t_ours, t_raw, 0.95, len(texts), throughput=True,
                    raw_name="the encoder class (ONNX, its own length-sorted batches)",
                    note="vectors identical" if same else f"max |Δ| {np.abs(results['ours'] - results['raw']).max():.2e}"))


# ---- search -------------------------------------------------------------------------------------------------------
def measure_search(data, rows: list[dict], repeats: int, pairs: set[str]) -> None:
    import faiss

    from bench_search import workload
    from shoptag.indexer.backends import VectorDims, open_backend
    from shoptag.indexer.documents import SearchQuery, SearchResults
    from shoptag.indexer.fulltext import BM25, match_expression
    from shoptag.pipeline.reindex import reindex
    from shoptag.pipeline.workspace import Workspace

    dim = data.encoders.text.dim
    backend = open_backend(data.settings, VectorDims(text=dim, image=None, fused=dim))
    try:
        if backend.count() != len(data.ids):
            store = Workspace(data.settings.workspace).open_store()
            try:
                reindex(data.settings, store, data.encoders, backend, show_progress=False)
            finally:
                store.close()
        load = workload(data.texts, data.ids, data.encoders.text, QUERIES)
        conn = sqlite3.connect(f"file:{Path(data.settings.workspace) / 'search' / 'search.sqlite'}?mode=ro", uri=True)
        exact = faiss.IndexFlatIP(dim)
        exact.add(data.vectors)  # text-only catalog: the text vectors are the fused ones
        ids = data.ids
        results: dict[str, list] = {}

        def fts_top(match: str, limit: int, columns: str = "d.id") -> list[tuple]:
            return conn.execute(
                f"""SELECT {columns} FROM (SELECT rowid, {BM25} AS b FROM docs_fts WHERE docs_fts MATCH ?
                    ORDER BY b LIMIT ?) t JOIN docs d ON d.rid = t.rowid ORDER BY t.b, d.id""",
                [match, limit]).fetchall()

        def hit_fields(rids: list[int]) -> dict[int, tuple]:
            """What a hit carries besides its text, in plain SQL: tag values (best first), attributes, numbers."""
            marks = json.dumps(rids)
            tags: dict[int, dict[str, list[str]]] = {}
            for rid, family, value in conn.execute(
                    """SELECT rid, family, value FROM tags WHERE rid IN (SELECT value FROM json_each(?))
                       ORDER BY rid, family, score DESC, value""", [marks]):
                tags.setdefault(rid, {}).setdefault(family, []).append(value)
            named: list[dict[int, dict]] = [{}, {}]
            for table, out in zip(("attrs", "numbers"), named):
                for rid, name, value in conn.execute(
                        f"SELECT rid, name, value FROM {table} WHERE rid IN (SELECT value FROM json_each(?))", [marks]):
                    out.setdefault(rid, {})[name] = value
            return {rid: (tags.get(rid, {}), named[0].get(rid, {}), named[1].get(rid, {})) for rid in rids}

        def answered(results_: SearchResults) -> tuple[list[tuple[str, tuple]], int]:
            return [(h.id, (h.tags, h.attributes, h.numbers)) for h in results_.hits], results_.total

        def ours_text() -> None:
            results["ours_text"] = [answered(backend.search(SearchQuery(text=t, size=10))) for t in load.texts]

        def raw_text() -> None:
            out = []
            for t in load.texts:
                match = match_expression(t)
                top = fts_top(match, 10, "d.rid, d.id, d.title, d.description")
                fields = hit_fields([rid for rid, *_ in top])
                total = conn.execute("SELECT COUNT(*) FROM docs_fts WHERE docs_fts MATCH ?", [match]).fetchone()[0]
                out.append(([(pid, fields[rid]) for rid, pid, _, _ in top], total))
            results["raw_text"] = out

        window = SearchQuery(text="x").window

        def ours_hybrid() -> None:
            results["ours_hybrid"] = [answered(backend.search(SearchQuery(text=t, vector=v, size=10)))
                                      for t, v in zip(load.texts, load.vectors)]

        def raw_hybrid() -> None:
            out = []
            for t, v in zip(load.texts, load.vectors):
                match = match_expression(t)
                text_ids = [pid for pid, in fts_top(match, window)]
                _, keys = exact.search(v[None, :], window)
                knn_ids = [ids[k] for k in keys[0] if k >= 0]
                fused: dict[str, float] = {}
                for ranked in (text_ids, knn_ids):
                    for rank, pid in enumerate(ranked):
                        fused[pid] = fused.get(pid, 0.0) + 1.0 / (RRF_K + rank + 1)
                top = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:10]
                docs = {pid: (rid, title, description) for rid, pid, title, description in conn.execute(
                    "SELECT rid, id, title, description FROM docs WHERE id IN (SELECT value FROM json_each(?))",
                    [json.dumps([pid for pid, _ in top])])}
                fields = hit_fields([docs[pid][0] for pid, _ in top if pid in docs])
                total = conn.execute(
                    """SELECT COUNT(*) FROM (SELECT rowid FROM docs_fts WHERE docs_fts MATCH ?
                       UNION SELECT rid FROM docs WHERE id IN (SELECT value FROM json_each(?)))""",
                    [match, json.dumps(knn_ids)]).fetchone()[0]
                out.append(([(pid, fields[docs[pid][0]]) for pid, _ in top if pid in docs], total))
            results["raw_hybrid"] = out

        if "search" in pairs:
            t_ours, t_raw = alternated(ours_text, raw_text, repeats)
            rows.append(row("text search (top 10)", t_ours, t_raw, 1.2, len(data.ids),
                            raw_name=f"FTS5 bm25 top 10 + {HIT_WORK}, {QUERIES} queries",
                            note=_agreement(results["ours_text"], results["raw_text"])))
        if "hybrid" in pairs:
            t_ours, t_raw = alternated(ours_hybrid, raw_hybrid, repeats)
            rows.append(row("hybrid search (top 10)", t_ours, t_raw, 1.1, len(data.ids),
                            raw_name=f"FTS5 top {window} + faiss IndexFlatIP top {window} + RRF in Python + "
                                     f"{HIT_WORK} (of the union), {QUERIES} queries",
                            note=_agreement(results["ours_hybrid"], results["raw_hybrid"])))
        conn.close()
    finally:
        backend.close()


def _agreement(ours: list[tuple[list[tuple[str, tuple]], int]], raw: list[tuple[list[tuple[str, tuple]], int]]) -> str:
    """Share of queries whose top 10 is the same set (ties at equal score may order differently), and share whose
    total and hit fields agree too."""
    same = [{pid for pid, _ in a} == {pid for pid, _ in b} for (a, _), (b, _) in zip(ours, raw)]
    full = [s and ta == tb and dict(a) == dict(b) for s, (a, ta), (b, tb) in zip(same, ours, raw)]
    n = max(len(ours), 1)
    return f"same hits: {sum(same) / n:.1%}; same totals and hit fields: {sum(full) / n:.1%}"


# ---- recall of the index choices ------------------------------------------------------------------------------------
def measure_recall(data) -> list[dict]:
    """recall@10 against exact search of the held-out 20 % against the other 80 %, per index type."""
    import faiss

    from shoptag.vectors.index_choice import build_index, nlist_for, recall_at_k, set_search_params

    order = np.random.default_rng(0).permutation(len(data.ids))
    cut = int(LABELLED_SHARE * len(order))
    base, queries = data.vectors[order[:cut]], data.vectors[order[cut:]][:2000]
    exact = faiss.IndexFlatIP(base.shape[1])
    exact.add(base)
    truth = exact.search(queries, 10)[1]
    nlist = nlist_for(len(base))
    out = []
    for factory, settings in ((f"IVF{nlist},Flat", (16, 32, 64)), (f"IVF{nlist},SQ8", (16, 32, 64)),
                              ("HNSW32", (64, 128))):
        start = time.perf_counter()
        index = build_index(base, factory)
        built = time.perf_counter() - start
        for value in settings:
            set_search_params(index, nprobe=value, ef_search=value)
            start = time.perf_counter()
            found = index.search(queries, 10)[1]
            searched = time.perf_counter() - start
            out.append({"factory": factory, "param": "efSearch" if factory.startswith("HNSW") else "nprobe",
                        "value": value, "recall_at_10": recall_at_k(found, truth), "n": len(base),
                        "queries": len(queries), "build_s": built, "search_ms_per_query": 1000 * searched / len(queries)})
    return out


# ---- output -------------------------------------------------------------------------------------------------------
def markdown(rows: list[dict], breakdown: dict, recall: list[dict], started: str, args: argparse.Namespace) -> str:
    lines = [
        "# shoptag against its raw libraries",
        "",
        f"Run {started} on {machine('cpu')} with `bench/bench_ratios.py{' --quick' if args.quick else ''}"
        f"{'' if args.pairs == set(PAIRS) else ' --pairs ' + ','.join(p for p in PAIRS if p in args.pairs)}`"
        f" ({args.repeats} alternated repeats of each pair; median seconds and min–max spread; `--quick`: the first"
        " 2,000 fashion products, tag on 1,000). Raw samples in `ratios.json`.",
        "",
        "| path | n | shoptag median (spread) s | raw median (spread) s | raw | ratio | goal | met | check |",
        "|---|---:|---|---|---|---:|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['path']} | {r['n']:,} | {r['ours_median_s']:.3f} ({min(r['ours_s']):.3f}–{max(r['ours_s']):.3f}) |"
            f" {r['raw_median_s']:.3f} ({min(r['raw_s']):.3f}–{max(r['raw_s']):.3f}) | {r['raw']} |"
            f" {r['ratio']:.2f}× {'' if r['ratio_kind'].startswith('time') else '(throughput)'} | {r['goal']} |"
            f" {'yes' if r['met'] else '**no**'} | {r['note']} |")
    if breakdown:
        lines += ["", "Stages of the warm `tag` runs (seconds per run; nested: evidence is inside decide, kNN/head/"
                  "lexical inside scoring; encoding runs on its own thread while the products already cached are scored, "
                  "store writes and search sync on the writer thread while the next batch is scored, so their seconds "
                  "overlap the others'):", "", "| stage | s per run | share of tag |",
                  "|---|---:|---:|"]
        lines += [f"| {name} | {b['seconds']:.2f} | {b['share']:.1%} |" for name, b in breakdown.items()]
    if recall:
        lines += ["", "recall@10 against exact search, real MiniLM vectors of the fashion catalog (80 % indexed, "
                  "2,000 of the other 20 % as queries):", "",
                  "| index | search parameter | recall@10 | build s | search ms/query |", "|---|---|---:|---:|---:|"]
        lines += [f"| {r['factory']} ({r['n']:,}) | {r['param']} {r['value']} | {r['recall_at_10']:.3f} |"
                  f" {r['build_s']:.1f} | {r['search_ms_per_query']:.3f} |" for r in recall]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args(__doc__, options)
    if args.repeats < 3:
        raise SystemExit("--repeats must be at least 3")
    if args.pairs - set(PAIRS):
        raise SystemExit(f"--pairs: unknown {', '.join(sorted(args.pairs - set(PAIRS)))} (known: {', '.join(PAIRS)})")
    if args.results is None:
        args.results = RESULTS if args.pairs == set(PAIRS) else args.work / "ratios-partial"
    output = Output()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    rows: list[dict] = []
    if args.quick:
        args.tag_products, args.encode_texts = 1_000, 500
    data = fashion_vectors(args.work, args.data_dir, 2_000 if args.quick else None, args.device)
    recall: list[dict] = []
    breakdown: dict = {}

    def write() -> None:  # after every section, so a run cut short keeps what it measured
        args.results.mkdir(parents=True, exist_ok=True)
        payload = {"started": started, "repeats": args.repeats, "rows": rows, "tag_stages": breakdown, "recall": recall}
        (args.results / "ratios.json").write_text(json.dumps(payload, indent=1) + "\n")
        (args.results / "ratios.md").write_text(markdown(rows, breakdown, recall, started, args))

    if "encode" in args.pairs:
        measure_encode(data, rows, args)
        write()
    if "knn" in args.pairs:
        measure_knn(data, rows, args.repeats)
        write()
    if args.pairs & {"search", "hybrid"}:
        measure_search(data, rows, args.repeats, args.pairs)
        write()
    if "recall" in args.pairs:
        recall = measure_recall(data)
        write()
    if "tag" in args.pairs:
        breakdown = measure_tag(args, rows, output)
        write()
    for r in rows:
        output.add("ratios", f"{r['path']} vs raw", r["ratio"], "x" if r["ratio_kind"].startswith("throughput") else "× time",
                   args.device, r["n"], {k: v for k, v in r.items() if k not in ("path",)})
    print(markdown(rows, breakdown, recall, started, args), flush=True)
    output.write(args.out)

if __name__ == "__main__":
    main()
