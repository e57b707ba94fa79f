"""`make bench-search`: relevance of storefront search on judged queries, both backends, four methods.

English: a sample of the fashion catalog (MiniLM vectors); Chinese: a sample of the Taobao titles (USE-multilingual
vectors). Each catalog is ingested into its own workspace, a tagger is trained on its labels (it understands the
queries), and the products are indexed in the embedded store and in a noida-db process. Queries and grades are
made from the labels (`judged_queries`). For each backend, nDCG@10, MRR and recall@100 of:

- BM25: the text alone;
- vector: the text encoder's kNN alone;
- hybrid: both, fused by reciprocal rank fusion (the default storefront ranking without query understanding);
- hybrid + tagger's query tags: the same, with only the tags the tagger accepts (no value names read), as
  boosts: what query understanding adds without reading names;
- hybrid + query tags: the same, with the query's tags (those the tagger is confident of, and those the query
  names) applied as the storefront applies them: boosts of text matches, the named ones also adding a kNN
  list among their products to the fusion.

Writes ``bench/results/relevance.json`` (every query's ranking metrics and its query tags) and ``relevance.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from bench_common import ROOT, WORK
from bench_es import noida
from judged_queries import JudgedQuery, chinese_queries, english_queries, ndcg_at, recall_at, reciprocal_rank

RESULTS = ROOT / "bench" / "results"
METHODS = ("BM25", "vector", "hybrid", "hybrid + tagger's query tags", "hybrid + query tags")
DEPTH = 100  # hits ranked per query (recall@100)


def catalog(language: str, data_dir: Path, size: int, seed: int = 3) -> list[dict]:
    """A seeded random sample of `size` records of the language's public data set."""
    from shoptag.pipeline.datasets import fashion_records, taobao_records

    records = fashion_records(data_dir) if language == "en" else taobao_records(data_dir, split="all")
    return random.Random(seed).sample(records, min(size, len(records)))


def prepare(language: str, records: list[dict], work: Path):
    """Settings, store, encoders and trained tagger of the language's workspace (built once, then reused)."""
    from shoptag.pipeline.encode import Encoders
    from shoptag.pipeline.ingest import ingest
    from shoptag.pipeline.search import query_model
    from shoptag.core.settings import load_settings
    from shoptag.pipeline.train import train
    from shoptag.pipeline.workspace import Workspace

    folder = work / f"relevance-{language}-{len(records)}"
    model = "minilm" if language == "en" else "use-multilingual"
    settings = load_settings(workspace=folder / "ws", encoders={"text_model": model})
    store = Workspace(settings.workspace).open_store()
    encoders = Encoders(settings.encoders)
    if store.count_products() == 0:
        path = folder / "catalog.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        ingest(settings, store, path, show_progress=False)
    tagger = query_model(settings, encoders)
    if tagger is None:
        tagger, _ = train(settings, store, encoders, show_progress=False)
    return settings, store, encoders, tagger


def evaluate(backend, queries: list[JudgedQuery], vectors, understood, boost_weight: float,
             cutoff: float | None) -> dict[str, dict]:
    """Per method: the mean metrics over `queries` and each query's figures, with the storefront's boost weight
    and similarity cutoff; `understood`: each query's tags, applied as the storefront applies them."""
    from shoptag.indexer.documents import SearchQuery
    from shoptag.pipeline.query_tags import applied

    out = {}
    for method in METHODS:
        rows = []
        start = time.perf_counter()
        for query, vector, tags in zip(queries, vectors, understood):
            base = SearchQuery(text=query.text, vector=vector, size=DEPTH, window=DEPTH, boost_weight=boost_weight,
                               min_similarity=cutoff)
            search = {"BM25": replace(base, vector=None), "vector": replace(base, text=""), "hybrid": base,
                      "hybrid + tagger's query tags": applied(base, accepted_only(tags), "boost"),
                      "hybrid + query tags": applied(base, tags, "boost")}[method]
            ranking = [hit.id for hit in backend.search(search).hits]
            rows.append({"query": query.text, "ndcg@10": ndcg_at(ranking, query), "mrr": reciprocal_rank(ranking, query),
                         "recall@100": recall_at(ranking, query), "hits": len(ranking)})
        out[method] = {metric: statistics.fmean(r[metric] for r in rows) for metric in ("ndcg@10", "mrr", "recall@100")}
        out[method]["seconds"] = time.perf_counter() - start
        out[method]["queries"] = rows
    return out


def accepted_only(tags: list) -> list:
    """The query tags the tagger accepts by their score, as if no name had been read."""
    return [replace(t, named=False) for t in tags if t.threshold is not None and t.score >= t.threshold]


def cosines(settings, store, encoders, queries: list[JudgedQuery], vectors) -> dict[str, list[float]]:
    """Percentiles (5, 25, 50, 75, 90, 99) of the cosine between each query and the products it grades
    (relevant) and all the others (irrelevant), and the share of each at or above the search's kNN cutoff: the
    figures `search.min_similarity = auto` is set from (`pipeline.search.NEIGHBOUR_COSINE`)."""
    import numpy as np

    from shoptag.pipeline.encode import encode_products
    from shoptag.pipeline.search import min_similarity
    from shoptag.pipeline.workspace import Workspace

    products = store.products()
    cache = Workspace(settings.workspace).open_cache()
    try:
        encoded, _ = encode_products(products, encoders, cache, show_progress=False)
    finally:
        cache.close()
    sims = np.asarray(vectors, dtype=np.float32) @ encoded.text.T
    graded = np.array([[p.id in q.grades for p in products] for q in queries])
    cutoff = min_similarity(settings)
    out: dict[str, list[float]] = {}
    for name, values in (("relevant", sims[graded]), ("irrelevant", sims[~graded])):
        out[name] = [round(float(v), 3) for v in np.percentile(values, [5, 25, 50, 75, 90, 99])]
        out[f"{name} at or above the cutoff"] = [round(float(np.mean(values >= cutoff)), 3)] if cutoff is not None else []
    return out


def run_language(language: str, args: argparse.Namespace) -> dict:
    from shoptag.indexer.backends import open_backend
    from shoptag.pipeline.query_tags import understand
    from shoptag.pipeline.reindex import reindex
    from shoptag.pipeline.search import min_similarity

    records = catalog(language, args.data_dir, args.products)
    settings, store, encoders, tagger = prepare(language, records, args.work)
    try:
        labels = {r["id"]: r.get("tags", {}) for r in records}
        make = english_queries if language == "en" else chinese_queries
        queries = make(labels, args.queries)
        vectors = encoders.text.encode([q.text for q in queries], query=True)
        understood = [understand(tagger, q.text, v, "boost") for q, v in zip(queries, vectors)]
        dims = _dims(encoders)
        result = {"products": len(records), "queries": len(queries), "text_model": settings.encoders.text_model,
                  "min_similarity": min_similarity(settings),
                  "cosines": cosines(settings, store, encoders, queries, vectors),
                  "query_tags": [{"query": q.text, "asked": q.tags, "tags": [asdict(t) for t in tags]}
                                 for q, tags in zip(queries, understood)],
                  "backends": {}}
        embedded = open_backend(settings, dims)
        try:
            reindex(settings, store, encoders, embedded, show_progress=False)
            result["backends"]["embedded"] = evaluate(embedded, queries, vectors, understood, settings.search.boost_weight,
                                                      min_similarity(settings))
        finally:
            embedded.close()
        if not args.no_es:
            with noida(args.work / f"noida-relevance-{language}") as url:
                es = settings.model_copy(update={"es": settings.es.model_copy(update={"url": url})})
                backend = open_backend(es, dims)
                try:
                    reindex(es, store, encoders, backend, show_progress=False)
                    result["backends"]["noida-db"] = evaluate(backend, queries, vectors, understood,
                                                              settings.search.boost_weight, min_similarity(settings))
                finally:
                    backend.close()
        return result
    finally:
        store.close()


def _dims(encoders):
    from shoptag.indexer.search_common import VectorDims

    return VectorDims(text=encoders.text.dim, image=None, fused=encoders.text.dim)


def markdown(results: dict, started: str) -> str:
    lines = ["# Search relevance", "",
             f"Run {started} with `bench/bench_relevance.py {' '.join(sys.argv[1:])}`. Judgments: see "
             "`docs/BENCHMARKS.md` (graded from catalog labels). Bold: the best method of a backend and metric.", ""]
    for language, result in results.items():
        lines += [f"## {'English (fashion)' if language == 'en' else 'Chinese (Taobao titles)'}: "
                  f"{result['products']:,} products, {result['queries']} queries, {result['text_model']}", "",
                  f"Measured {result.get('run', started)}; kNN similarity cutoff "
                  f"{result.get('min_similarity', 'none (the whole window)')}.", "",
                  *_cosine_lines(result.get("cosines")),
                  "| backend | method | nDCG@10 | MRR | recall@100 |", "|---|---|---:|---:|---:|"]
        for backend, methods in result["backends"].items():
            best = {m: max(v[m] for v in methods.values()) for m in ("ndcg@10", "mrr", "recall@100")}
            for method, figures in methods.items():
                cells = [f"**{figures[m]:.3f}**" if figures[m] == best[m] else f"{figures[m]:.3f}"
                         for m in ("ndcg@10", "mrr", "recall@100")]
                lines.append(f"| {backend} | {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def kept_languages(args: argparse.Namespace) -> dict:
    """The results of the languages this run does not measure, from the existing relevance.json, so measuring
    one language keeps the other's table."""
    path = args.results / "relevance.json"
    if not path.is_file():
        return {}
    wanted = set(args.languages.split(","))
    return {lang: result for lang, result in json.loads(path.read_text())["results"].items() if lang not in wanted}


def _cosine_lines(cosines: dict | None) -> list[str]:
    """The query-product cosine percentiles as a small table (runs before they were recorded have none)."""
    if not cosines:
        return []
    lines = ["| query-product cosine | p5 | p25 | p50 | p75 | p90 | p99 | share at or above the cutoff |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in ("relevant", "irrelevant"):
        share = cosines.get(f"{name} at or above the cutoff") or ["-"]
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in cosines[name]) + f" | {share[0]} |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=3000, help="catalog sample per language")
    parser.add_argument("--queries", type=int, default=60, help="judged queries per language")
    parser.add_argument("--languages", default="en,zh")
    parser.add_argument("--no-es", action="store_true", help="embedded backend only")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    results = kept_languages(args)
    for language in args.languages.split(","):
        print(f"[relevance] {language} ...", file=sys.stderr, flush=True)
        results[language] = {**run_language(language, args), "run": f"{started} (`{' '.join(sys.argv[1:])}`)"}
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / "relevance.json").write_text(json.dumps({"started": started, "argv": sys.argv[1:],
                                                                  "results": results}, indent=1, ensure_ascii=False))
        (args.results / "relevance.md").write_text(markdown(results, started))
    print(markdown(results, started))


if __name__ == "__main__":
    main()
