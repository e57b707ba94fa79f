"""The learning loop measured on the fashion data: from 2% labels, a simulated reviewer who knows the true labels
takes 200 decisions a round through the review API the web page uses (`GET /review`, `POST /review/decisions`),
then `train --if-better` and `tag`; each round reports coverage at the target precision and weighted F1 on a fixed
evaluation set nobody labels. A last round has a careless reviewer (200 wrong labels): the guard must keep that
candidate aside, and the API's undo takes the wrong decisions back.

    python bench/review_loop.py --products 5000      # results in bench/results/review_loop.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from shoptag.core.settings import Settings
from shoptag.pipeline.datasets import default_data_dir, fashion_records
from shoptag.pipeline.encode import Encoders, encode_products
from shoptag.pipeline.guard import family_metrics
from shoptag.pipeline.ingest import ingest
from shoptag.pipeline.search_sync import open_search
from shoptag.pipeline.tag import load_checked_model, tag
from shoptag.pipeline.train import train_if_better
from shoptag.pipeline.workspace import Workspace
from shoptag.service.app import create_app
from shoptag.tagger.split import unit_hash

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work" / "review-loop"
RESULTS = ROOT / "bench" / "results"
KEY = "review-loop-key"
EVAL_FRACTION = 0.2  # products nobody labels or reviews: the loop is measured on them
SEED_FRACTION = 0.02  # the labels the loop starts from


def build(products: int, settings: Settings) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
    """A catalog of the first `products` fashion products where only 2% keep their tags; the true tags of all,
    and the ids of the evaluation set."""
    records = fashion_records(default_data_dir(), limit=products)
    truth = {r["id"]: r["tags"] for r in records}
    eval_ids = sorted(pid for pid in truth if unit_hash(pid, "review-loop-eval") < EVAL_FRACTION)
    evaluated = set(eval_ids)
    seeds = {pid for pid in truth if pid not in evaluated and unit_hash(pid, "review-loop-seed") < SEED_FRACTION}
    catalog = WORK / "catalog.jsonl"
    catalog.parent.mkdir(parents=True, exist_ok=True)
    with catalog.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps({**r, "tags": r["tags"] if r["id"] in seeds else {}}, ensure_ascii=False) + "\n")
    store = Workspace(settings.workspace).open_store()
    try:
        ingest(settings, store, catalog, show_progress=False)
    finally:
        store.close()
    return truth, eval_ids


def measure(settings: Settings, encoders: Encoders, truth: dict, eval_ids: list[str], candidate=None) -> dict:
    """The current model on the evaluation set: per family and averaged over families; with `candidate`, the
    round's candidate's means too (promoted or kept aside: whether the guard judged right)."""
    workspace = Workspace(settings.workspace)
    store, cache = workspace.open_store(), workspace.open_cache()
    try:
        products = store.products(eval_ids)
        vectors, _ = encode_products(products, encoders, cache, show_progress=False)
        model = load_checked_model(workspace.models_dir, encoders, settings.index)
        args = (vectors.fused, [p.text for p in products], [p.id for p in products], [truth[p.id] for p in products])
        families = family_metrics(model, *args)
        tried = family_metrics(candidate, *args) if candidate is not None else None
        labelled = len([1 for fams in store.known_tags().values() if any(fams.values())])
        queued = store.read("SELECT COUNT(*) FROM tags WHERE status = 'review'")[0][0]
    finally:
        cache.close()
        store.close()
    mean = {m: round(float(np.mean([f[m] for f in families.values()])), 4) for m in ("f1_weighted", "coverage_at_target")}
    if tried is not None:
        mean |= {f"candidate_{m}": round(float(np.mean([f[m] for f in tried.values()])), 4)
                 for m in ("f1_weighted", "coverage_at_target")}
    return {"labelled_products": labelled, "queue": queued, **mean, "families": families}


def retrain(settings: Settings, encoders: Encoders) -> tuple[dict, object]:
    """`train --if-better`, then `tag` (every product the new model has not tagged yet, search kept in step);
    the guard's verdict and the candidate model."""
    store = Workspace(settings.workspace).open_store()
    backend = open_search(settings, encoders)
    try:
        candidate, summary = train_if_better(settings, store, encoders, show_progress=False)
        tagged = tag(settings, store, encoders, backend, show_progress=False)
    finally:
        backend.close()
        store.close()
    guard = summary["guard"]
    return {"promoted": guard["promoted"], "reasons": guard["reasons"], "held_out": guard["held_out"],
            "judged": guard["judged"], "guard_families": guard["families"], "retagged": tagged.tagged}, candidate


def review_round(client: TestClient, truth: dict, evaluated: set[str], n: int, careless: bool = False) -> dict:
    """`n` decisions on the queue's most valuable items, one request each as the page sends them. The reviewer
    accepts the top candidate when it is right, else picks the right one or types it; a careless one (the
    deliberately worse candidate) sets a wrong value drawn at random from the family's values every time."""
    items: list[dict] = []
    while len(items) < 4 * n:  # pages of the queue as it stands, enough to skip the evaluation products
        page = client.get("/review", params={"limit": 500, "offset": len(items)}).json()["items"]
        if not page:
            break
        items += page
    counts = {"accept": 0, "pick another": 0, "typed": 0, "wrong": 0}
    by_family: dict[str, int] = {}
    rng = np.random.default_rng(7)
    family_values: dict[str, list[str]] = {}
    for tags in truth.values():
        for family, values in tags.items():
            family_values.setdefault(family, []).extend(values)
    family_values = {f: sorted(set(v)) for f, v in family_values.items()}
    ids = []
    for item in items:
        true = truth[item["product_id"]].get(item["family"])
        if len(ids) == n:
            break
        if not true or item["product_id"] in evaluated:
            continue
        values = [c["value"] for c in item["candidates"]]
        if careless:
            wrong = [v for v in family_values[item["family"]] if v not in true]
            body, kind = {"action": "correct", "values": [str(rng.choice(wrong))]}, "wrong"
        elif values[0] == true[0]:
            body, kind = {"action": "accept"}, "accept"
        else:
            body, kind = {"action": "correct", "values": true}, "pick another" if true[0] in values else "typed"
        response = client.post("/review/decisions", json={
            "decisions": [{"id": item["product_id"], "family": item["family"], **body}]})
        response.raise_for_status()
        ids += response.json()["decisions"]
        counts[kind] += 1
        by_family[item["family"]] = by_family.get(item["family"], 0) + 1
    return {"decisions": len(ids), "ids": ids, **counts, "by_family": dict(sorted(by_family.items()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=5_000, help="first N fashion products")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--decisions", type=int, default=200)
    args = parser.parse_args()
    if not (default_data_dir() / "fashion" / "products.csv").is_file():
        print(f"no fashion data under {default_data_dir()}: nothing measured")
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workspace = WORK / f"ws-{args.products}"
    shutil.rmtree(workspace, ignore_errors=True)
    settings = Settings(workspace=workspace, encoders={"text_model": "minilm"}, service={"api_key": KEY})
    encoders = Encoders(settings.encoders)
    start = time.perf_counter()
    truth, eval_ids = build(args.products, settings)
    evaluated = set(eval_ids)
    verdict, candidate = retrain(settings, encoders)
    rounds = [{"round": 0, "reviewer": "none (2% seed labels)", **verdict,
               **measure(settings, encoders, truth, eval_ids, candidate), "seconds": round(time.perf_counter() - start, 1)}]
    print(json.dumps({k: v for k, v in rounds[-1].items() if k != "families"}))
    headers = {"X-API-Key": KEY, "X-Reviewer": "simulated"}
    for r in range(1, args.rounds + 2):
        careless = r == args.rounds + 1
        t0 = time.perf_counter()
        with TestClient(create_app(settings), headers=headers) as client:
            decided = review_round(client, truth, evaluated, args.decisions, careless=careless)
            review_seconds = time.perf_counter() - t0
        result, candidate = retrain(settings, encoders)
        row = {"round": r, "reviewer": "careless" if careless else "true labels",
               **{k: v for k, v in decided.items() if k != "ids"}, "review_api_seconds": round(review_seconds, 1),
               **result, **measure(settings, encoders, truth, eval_ids, candidate),
               "seconds": round(time.perf_counter() - t0, 1)}
        if careless:  # take the wrong decisions back through the API, newest first
            with TestClient(create_app(settings), headers=headers) as client:
                for decision in reversed(decided["ids"]):
                    client.post("/review/undo", json={"decision": decision}).raise_for_status()
            row["undone"] = len(decided["ids"])
        rounds.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "families"}))
    report = {"products": args.products, "evaluation_products": len(eval_ids), "seed_fraction": SEED_FRACTION,
              "target_precision": settings.tagger.target_precision, "text_model": "minilm",
              "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other jobs)", "rounds": rounds}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "review_loop.json").write_text(json.dumps(report, indent=1))
    (RESULTS / "review_loop.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = [
        f"# The learning loop on fashion ({report['products']:,} products, {report['evaluation_products']:,} never "
        f"labelled for evaluation; target precision {report['target_precision']})",
        "",
        "| round | reviewer | decisions (accept / pick / typed / wrong) | labelled products | guard | "
        "coverage at target (mean of families) | weighted F1 (mean) | the candidate's coverage / F1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["rounds"]:
        decisions = "-" if r["round"] == 0 else f"{r['decisions']} ({r['accept']} / {r['pick another']} / {r['typed']} / {r['wrong']})"
        guard = "promoted" if r["promoted"] else "kept aside: " + "; ".join(r["reasons"])[:300]
        lines.append(f"| {r['round']} | {r['reviewer']} | {decisions} | {r['labelled_products']} | {guard} | "
                     f"{r['coverage_at_target']:.4f} | {r['f1_weighted']:.4f} | "
                     f"{r['candidate_coverage_at_target']:.4f} / {r['candidate_f1_weighted']:.4f} |")
    lines += ["", "Coverage and F1 are the current model's on the evaluation set after the round; the last column is"
              " the round's candidate on the same set, whether the guard promoted it or kept it aside.", "",
              "Decisions per family, and what the guard judged:", ""]
    for r in report["rounds"][1:]:
        lines.append(f"- round {r['round']}: " + ", ".join(f"{f} {n}" for f, n in r["by_family"].items())
                     + f"; guard on {r['held_out']} held-out products, judged: {r['judged']}")
    families = sorted(report["rounds"][0]["families"])
    lines += ["", "Per family, weighted F1 / coverage at target, by round:", "",
              "| family | " + " | ".join(f"round {r['round']}" for r in report["rounds"]) + " |",
              "| --- |" + " --- |" * len(report["rounds"])]
    for family in families:
        cells = [f"{r['families'][family]['f1_weighted']:.3f} / {r['families'][family]['coverage_at_target']:.3f}"
                 if family in r["families"] else "-" for r in report["rounds"]]
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    lines += ["", f"Machine: {report['machine']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
