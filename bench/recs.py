"""Recommendations on real shopper data: next-basket quality on a time split, and event ingest speed.

Data: the UCI Online Retail II purchase log (`behaviour/` in the shared data folder). The catalog is its titled
items; `shoptag events` ingests every line (non-product types and untitled items become rejects). Split: the last
`--test-days` before the newest event are the test period, the `--val-days` before that the validation period
used to choose the blend weights; each period's truth is, per user with earlier purchases, their first basket
in the period. Methods, all scored from the same fitted model (`pipeline.recommend.fit` on events before the
period):
  popular   recent decayed popularity
  repeat    the user's own purchases (decayed), popular fill: the strongest simple baseline
  content   products nearest the user's profile vector (FAISS over title embeddings)
  cobought  the user's history through the item-item co-purchase matrix
  blend     cobought + content (weights chosen on validation)
  neighbours what the 50 users who buy most like the user buy (user-based kNN, as TIFU-KNN)
  personal  repeat + cobought + content + popular + neighbours (weights chosen on validation)
  als       implicit's ALS on the user × item matrix (when `implicit` is installed), for reference

`python bench/recs.py` writes bench/results/recs.{json,md} and the table into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow.csv as pacsv

from shoptag.behaviour import demand, offline_eval
from shoptag.behaviour.events import TYPE_CODE
from shoptag.behaviour.recommend import (
    Weights, cobought_scores, history_vector, neighbour_scores, profile_vector, score_parts, top_k,
)
from shoptag.core.settings import load_settings
from shoptag.pipeline import datasets
from shoptag.pipeline.encode import Encoders, encode_products
from shoptag.pipeline.events import ingest_events, open_event_log
from shoptag.pipeline.ingest import ingest
from shoptag.pipeline.recommend import POSITIVE, content_scores, event_weights, fit
from shoptag.pipeline.workspace import Workspace

DAY = 86400
ROOT = Path(__file__).resolve().parent.parent
TINY = 1e-3  # popularity fill under a method's own scores
K_EVAL = (10, 20)


def per_user_parts(model, columns, position_users, cutoff, half_life, similar_users):
    """Each evaluated user's score components (dense over the catalog), from events before `cutoff`."""
    train = columns.select(columns.time < cutoff)
    items = np.array([model.position.get(i, -1) for i in train.item.tolist()], dtype=np.int64)
    ok = (items >= 0) & (train.user >= 0)
    weights = event_weights(train.select(ok), cutoff, half_life)
    users, items = train.user[ok], items[ok]
    order = np.argsort(users, kind="stable")
    users, items, weights = users[order], items[order], weights[order]
    bounds = np.searchsorted(users, position_users)
    ends = np.searchsorted(users, position_users, side="right")
    parts = []
    for user, start, end in zip(position_users, bounds, ends, strict=True):
        history = np.clip(history_vector(items[start:end], weights[start:end], len(model.item_ids)), 0, None)
        cobought = cobought_scores(history, model.similarity)
        content = content_scores(model, profile_vector(history, model.vectors))
        neighbours = neighbour_scores(history, model.users, model.users_by_item, similar_users,
                                      model.user_row(int(user)))
        parts.append((history, cobought, content, neighbours))
    return parts


def evaluate(parts, baskets, popularity, weights: Weights, cold: set[int] | None = None):
    recalls = {k: [] for k in K_EVAL}
    ndcgs, lists, cold_recalls = [], [], []
    for (history, cobought, content, neighbours), basket in zip(parts, baskets, strict=True):
        # the cobought part is computed once per user (per_user_parts), not per weight choice
        scores = sum(score_parts(history, cobought, popularity, content, neighbours, weights).values())
        rec = top_k(scores, max(K_EVAL))
        lists.append(rec)
        for k in K_EVAL:
            recalls[k].append(offline_eval.recall_at(rec, basket.items, k))
        ndcgs.append(offline_eval.ndcg_at(rec, basket.items, 10))
        if cold:
            truth = np.array([i for i in basket.items.tolist() if i in cold])
            if len(truth):
                cold_recalls.append(offline_eval.recall_at(rec, truth, 20))
    return {
        **{f"recall@{k}": float(np.mean(v)) for k, v in recalls.items()},
        "ndcg@10": float(np.mean(ndcgs)),
        "coverage@20": offline_eval.coverage([r[:20] for r in lists], len(popularity)),
        "cold_recall@20": float(np.mean(cold_recalls)) if cold_recalls else None,
        "cold_baskets": len(cold_recalls),
    }


GRID = {"repeat": (1.0,), "cobought": (0.0, 0.25, 0.5, 1.0), "content": (0.0, 0.1, 0.25, 0.5),
        "popular": (0.0, 0.05, 0.1, 0.25), "neighbours": (0.0, 0.25, 0.5, 1.0)}
SOURCES = ("repeat", "cobought", "content", "popular", "neighbours")


def choose(parts, baskets, popularity, names):
    """Weights over `names` with the best validation recall@20 (others 0; a tiny popular fill always). Only
    ratios matter, so the first source of `names` is fixed at 1."""
    best, best_w = -1.0, None
    first = next(n for n in SOURCES if n in names)
    axes = [((1.0,) if n == first else GRID[n]) if n in names else (0.0,) for n in SOURCES]
    for combo in itertools.product(*axes):
        values = dict(zip(SOURCES, combo, strict=True))
        values["popular"] = max(values["popular"], TINY)
        w = Weights(**values)
        score = evaluate(parts, baskets, popularity, w)["recall@20"]
        if score > best:
            best, best_w = score, w
    return best_w


def als_rows(columns, model, cutoff, users, k):
    """implicit's ALS top-k per evaluated user (None when implicit is not installed)."""
    try:
        import implicit
        import scipy.sparse as sp
    except ImportError:
        return None
    train = columns.select((columns.time < cutoff) & (columns.user >= 0))
    items = np.array([model.position.get(i, -1) for i in train.item.tolist()], dtype=np.int64)
    ok = items >= 0
    uniq, uidx = np.unique(train.user[ok], return_inverse=True)
    matrix = sp.csr_matrix((np.ones(ok.sum(), np.float32), (uidx, items[ok])), shape=(len(uniq), len(model.item_ids)))
    matrix.sum_duplicates()
    matrix.data = np.log1p(matrix.data)
    als = implicit.als.AlternatingLeastSquares(factors=64, iterations=15, regularization=0.05, random_state=13)
    als.fit(matrix, show_progress=False)
    row_of = {int(u): i for i, u in enumerate(uniq.tolist())}
    rows = [row_of[int(u)] for u in users]
    ids, _ = als.recommend(rows, matrix[rows], N=k, filter_already_liked_items=False)
    return [np.asarray(r) for r in ids]


CHRISTMAS = re.compile(r"CHRISTMAS|XMAS|ADVENT|SANTA|REINDEER|NATIVITY|BAUBLE|SNOWFLAKE|SNOWMAN")


def seasonality(purchases, item_ids, titles, min_units: float = 50.0, min_lift: float = 3.0) -> dict:
    """A "Christmas" tag from sales dates alone (lift of the Christmas trade, September to December), checked
    against the titles: how many of the items it picks say Christmas in their title, against the share among all
    items that sell (titles undercount: a paper chain kit says nothing of Christmas)."""
    position = {pid: i for i, pid in enumerate(item_ids.tolist())}
    items = np.array([position.get(i, -1) for i in purchases.item.tolist()])
    ok = items >= 0
    total, lift = demand.seasonal_lift(items[ok], purchases.time[ok], purchases.quantity[ok], (9, 10, 11, 12),
                                       len(item_ids))
    selling = total >= min_units
    picked = selling & (lift >= min_lift)
    says = np.array([bool(CHRISTMAS.search(titles.get(pid, ""))) for pid in item_ids.tolist()])
    return {"picked": int(picked.sum()), "selling_items": int(selling.sum()),
            "precision_by_title": float(says[picked].mean()) if picked.any() else None,
            "base_rate": float(says[selling].mean()), "recall_by_title": float(picked[selling & says].mean()),
            "min_units": min_units, "min_lift": min_lift}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_speed(workspace: Path, users: list[str], items: list[str], requests: int = 500) -> dict:
    """A real `shoptag serve` on loopback: /recommendations latency for known users, and how long one new event
    takes to show in that user's recommendations."""
    port, key = free_port(), "bench-key"
    env = {**os.environ, "SHOPTAG_WORKSPACE": str(workspace), "SHOPTAG_SERVICE__API_KEY": key}
    server = subprocess.Popen([str(Path(sys.executable).parent / "shoptag"), "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=120) as http:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.5)
            rng = np.random.default_rng(13)
            http.get(f"/recommendations/{users[0]}")  # the first request loads the model
            latencies = []
            for user in rng.choice(users, size=requests):
                t = time.perf_counter()
                assert http.get(f"/recommendations/{user}", params={"k": 20}).status_code == 200
                latencies.append(time.perf_counter() - t)
            visible = []
            for n, item in enumerate(rng.choice(items, size=20)):
                user = f"bench-new-{n}"
                t = time.perf_counter()
                http.post("/events", json=[{"time": "2010-09-25 12:00:00", "type": "purchase", "user": user,
                                            "item": str(item)}], headers={"X-API-Key": key})
                while True:
                    got = http.get(f"/recommendations/{user}", params={"k": 20}).json()
                    if got["known_user"] and got["items"] and got["items"][0]["id"] == item:
                        break
                visible.append(time.perf_counter() - t)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    ms = np.array(latencies) * 1000
    return {"requests": requests, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "event_visible_max_s": float(max(visible)), "event_visible_median_s": float(np.median(visible))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=datasets.default_data_dir())
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "work" / "recs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--test-days", type=int, default=28)
    parser.add_argument("--val-days", type=int, default=28)
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/BENCHMARKS.md")
    args = parser.parse_args()
    events_path = datasets.behaviour_events(args.data_dir)
    if not events_path.is_file():
        raise SystemExit(f"no behaviour data at {events_path}: see the shared data README")
    shutil.rmtree(args.work, ignore_errors=True)
    settings = load_settings(None, workspace=args.work / "workspace")
    store = Workspace(settings.workspace).open_store()
    catalog = datasets.behaviour_catalog(args.data_dir, args.work / "items.jsonl")
    ingest(settings, store, catalog, show_progress=False)

    t = time.perf_counter()
    pacsv.read_csv(events_path)
    raw_read = time.perf_counter() - t
    t = time.perf_counter()
    report = ingest_events(settings, store, events_path)
    ingest_s = time.perf_counter() - t
    t = time.perf_counter()
    again = ingest_events(settings, store, events_path)
    reingest_s = time.perf_counter() - t

    encoders = Encoders(settings.encoders)
    products = store.products()
    cache = Workspace(settings.workspace).open_cache()
    vectors, _ = encode_products(products, encoders, cache, show_progress=False)
    cache.close()
    item_ids = np.array([p.id for p in products], dtype=object)
    log = open_event_log(settings)
    columns = log.store.columns(POSITIVE)
    log.close()
    purchases = columns.select(columns.type == TYPE_CODE["purchase"])
    newest = int(columns.time.max())
    test_cut = newest - args.test_days * DAY
    val_cut = test_cut - args.val_days * DAY
    s = settings.behaviour

    def split(cutoff, horizon):
        model = fit(columns.select(columns.time < cutoff), item_ids, vectors.fused, s)
        items = np.array([model.position.get(i, -1) for i in purchases.item.tolist()], dtype=np.int64)
        ok = items >= 0
        baskets = offline_eval.next_baskets(purchases.user[ok], purchases.session[ok], items[ok],
                                            purchases.time[ok], cutoff, horizon)
        users = np.array([b.user for b in baskets], dtype=np.int64)
        parts = per_user_parts(model, columns, users, cutoff, s.half_life_days, s.similar_users)
        seen = np.unique(items[ok & (purchases.time < cutoff)])
        cold = set(range(len(item_ids))) - set(seen.tolist())
        return model, baskets, users, parts, cold

    val_model, val_baskets, _, val_parts, _ = split(val_cut, args.val_days * DAY)
    val_model_pop = val_model.popularity
    chosen = {
        "blend": choose(val_parts, val_baskets, val_model_pop, {"cobought", "content"}),
        "personal": choose(val_parts, val_baskets, val_model_pop, set(SOURCES)),
    }
    model, baskets, users, parts, cold = split(test_cut, args.test_days * DAY)
    methods = {
        "popular": Weights(popular=1.0),
        "repeat": Weights(repeat=1.0, popular=TINY),
        "content": Weights(content=1.0, popular=TINY),
        "cobought": Weights(cobought=1.0, popular=TINY),
        "neighbours": Weights(neighbours=1.0, popular=TINY),
        **chosen,
    }
    rows = {name: {**evaluate(parts, baskets, model.popularity, w, cold), "weights": w.__dict__}
            for name, w in methods.items()}
    als = als_rows(columns, model, test_cut, users, max(K_EVAL))
    if als is not None:
        rows["als"] = {
            **{f"recall@{k}": float(np.mean([offline_eval.recall_at(r, b.items, k) for r, b in zip(als, baskets)]))
               for k in K_EVAL},
            "ndcg@10": float(np.mean([offline_eval.ndcg_at(r, b.items, 10) for r, b in zip(als, baskets)])),
            "coverage@20": offline_eval.coverage([r[:20] for r in als], len(item_ids)),
            "cold_recall@20": None, "cold_baskets": 0, "weights": None,
        }
    season = seasonality(purchases, item_ids, {p.id: p.title.upper() for p in products})
    raw_users = sorted({r for r in pacsv.read_csv(events_path).column("user_id").to_pylist() if r is not None})
    speed = service_speed(settings.workspace, [str(u) for u in raw_users], item_ids.tolist())
    result = {
        "service": speed,
        "seasonality": season,
        "data": {"events": report.read, "added": report.added, "rejected": report.rejected,
                 "catalog": len(item_ids), "test_users": len(baskets), "validation_users": len(val_baskets),
                 "test_period": [test_cut, newest], "cold_items_in_test_baskets":
                     int(sum(len(set(b.items.tolist()) & cold) > 0 for b in baskets))},
        "ingest": {"events_per_s": report.read / ingest_s, "seconds": ingest_s, "raw_pyarrow_read_s": raw_read,
                   "reingest_added": again.added, "reingest_s": reingest_s},
        "methods": rows,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpus": os.cpu_count(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recs.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.out / "recs.md").write_text(table)
    if not args.no_docs:
        write_docs(table)
    print(table)


def markdown(result: dict) -> str:
    d, i = result["data"], result["ingest"]
    lines = [
        f"Next-basket recommendations, UCI Online Retail II: {d['events']:,} event lines, catalog {d['catalog']:,} "
        f"titled items; test = first basket of each of {d['test_users']:,} returning users in the last 28 days "
        f"(validation: {d['validation_users']:,} users in the 28 days before, used to choose weights).",
        "",
        "| method | recall@10 | recall@20 | nDCG@10 | coverage@20 | cold-item recall@20 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in result["methods"].items():
        cold = "–" if m["cold_recall@20"] is None else f"{m['cold_recall@20']:.3f}"
        lines.append(f"| {name} | {m['recall@10']:.4f} | {m['recall@20']:.4f} | {m['ndcg@10']:.4f} | "
                     f"{m['coverage@20']:.3f} | {cold} |")
    lines += ["", f"Cold items (no event before the test period) occur in {d['cold_items_in_test_baskets']} test "
                  "baskets; only content-based sources can reach them.",
              f"Seasonality from sales dates alone: {result['seasonality']['picked']} of "
              f"{result['seasonality']['selling_items']} items selling ≥ {result['seasonality']['min_units']:.0f} "
              f"units have a September-December lift ≥ {result['seasonality']['min_lift']:.0f}; "
              f"{result['seasonality']['precision_by_title']:.0%} of them say Christmas in their title (base rate "
              f"{result['seasonality']['base_rate']:.0%}), and they are "
              f"{result['seasonality']['recall_by_title']:.0%} of the selling items whose title does.",
              f"Service (`shoptag serve`, loopback, {result['service']['requests']} requests for known users): "
              f"`GET /recommendations` p50 {result['service']['p50_ms']:.1f} ms, p99 {result['service']['p99_ms']:.1f} "
              f"ms; one new purchase showed in that user's recommendations after at most "
              f"{result['service']['event_visible_max_s'] * 1000:.0f} ms (median "
              f"{result['service']['event_visible_median_s'] * 1000:.0f} ms, 20 trials).",
              f"Event ingest: {i['events_per_s']:,.0f} events/s ({i['seconds']:.1f} s; pyarrow alone reads the "
              f"file in {i['raw_pyarrow_read_s']:.2f} s); re-ingest of the same file added {i['reingest_added']}.",
              ""]
    return "\n".join(lines)


def write_docs(table: str) -> None:
    path = ROOT / "docs" / "BENCHMARKS.md"
    begin, end = "<!-- recs:begin -->", "<!-- recs:end -->"
    text = path.read_text()
    block = f"{begin}\n{table}\n{end}"
    if begin in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text += f"\n## Recommendations (`make bench-recs`)\n\n{block}\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
