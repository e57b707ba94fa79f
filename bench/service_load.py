"""Load check of the storefront service on a 20,000-product fashion workspace, loopback only.

Builds the workspace once (cached under the git-ignored bench/work/service20k: ingest, train, tag; text only,
`minilm`), starts `shoptag serve` in a subprocess on a fresh copy of it, and measures with a bounded number of requests, each
phase also bounded in time:
  * GET /similar (random catalog ids) and GET /search (words of random titles): latency p50/p95/p99;
  * POST /products of products the workspace has not seen (their tags removed, so the model tags them) one
    per request and in batches of 50: products per second;
  * GET /similar while products are being added, to show reads going on during writes.
Writes bench/results/service_load.json and .md, with the machine and its load average before and after
(other jobs may share the CPU; the figures say so rather than hide it).

    .venv/bin/python bench/service_load.py [--similar 2000] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "work" / "service20k"
RESULTS = REPO / "bench" / "results"
CATALOG_SIZE = 20_000
NEW_PRODUCTS = 1_000
SEED = 7


def settings_for(workspace: Path):
    from shoptag.core.settings import Settings

    # a short head fit: this check measures the service, not tagging quality (bench/work has the eval runs)
    return Settings(workspace=workspace, encoders={"text_model": "minilm", "device": "cpu"},
                    tagger={"head_epochs": 5, "head_patience": 2, "lexical": False})


def build_workspace(data_dir: Path) -> dict:
    """The cached 20k workspace and the file of new products, made once; returns how long each stage took."""
    from shoptag.pipeline.datasets import fashion_catalog
    from shoptag.pipeline.encode import Encoders
    from shoptag.pipeline.ingest import ingest
    from shoptag.pipeline.search_sync import open_search
    from shoptag.pipeline.tag import tag
    from shoptag.pipeline.train import train
    from shoptag.pipeline.workspace import Workspace

    done = WORK / "build.json"
    if done.exists():
        return json.loads(done.read_text())
    WORK.mkdir(parents=True, exist_ok=True)
    lines = fashion_catalog(data_dir, WORK / "all.jsonl", limit=CATALOG_SIZE + NEW_PRODUCTS).read_text().splitlines()
    (WORK / "catalog.jsonl").write_text("\n".join(lines[:CATALOG_SIZE]) + "\n")
    fresh = [{k: v for k, v in json.loads(line).items() if k != "tags"} for line in lines[CATALOG_SIZE:]]
    (WORK / "new_products.json").write_text(json.dumps(fresh, ensure_ascii=False))
    settings = settings_for(WORK / "ws")
    store = Workspace(settings.workspace).open_store()
    encoders = Encoders(settings.encoders)
    timings = {}
    try:
        start = time.perf_counter()
        ingest(settings, store, WORK / "catalog.jsonl", show_progress=False)
        timings["ingest_s"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        train(settings, store, encoders, show_progress=False)
        timings["train_s"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        backend = open_search(settings, encoders)
        try:
            tag(settings, store, encoders, backend, show_progress=False)
        finally:
            backend.close()
        timings["tag_and_index_s"] = round(time.perf_counter() - start, 1)
        timings["products"] = store.count_products()
    finally:
        store.close()
    done.write_text(json.dumps(timings))
    return timings


class Service:
    """`shoptag serve` on a free loopback port, in its own process."""

    def __init__(self, workspace: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "SHOPTAG_WORKSPACE": str(workspace), "SHOPTAG_ENCODERS__TEXT_MODEL": "minilm",
               "SHOPTAG_ENCODERS__DEVICE": "cpu", "SHOPTAG_CONFIG": "",
               "HF_HUB_OFFLINE": "1"}
        started = time.perf_counter()
        with (WORK / "serve.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).with_name("shoptag")), "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=env, stdout=subprocess.DEVNULL, stderr=log,
            )
        while time.perf_counter() - started < 600:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited while starting; see {WORK / 'serve.log'}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    self.start_s = round(time.perf_counter() - started, 1)
                    return
            except httpx.TransportError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError("the service did not start within 600 s")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def run_phase(requests: list[Callable[[httpx.Client], httpx.Response]], base_url: str, concurrency: int,
              time_limit: float) -> dict:
    """Send `requests` from `concurrency` threads (each its own connection) until done or `time_limit` passes."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    queue = iter(requests)
    deadline = time.perf_counter() + time_limit

    def worker() -> None:
        with httpx.Client(base_url=base_url, timeout=120) as client:
            while time.perf_counter() < deadline:
                with lock:
                    request = next(queue, None)
                if request is None:
                    return
                start = time.perf_counter()
                status = request(client).status_code
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    statuses[status] = statuses.get(status, 0) + 1

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {
        "requests": len(latencies), "planned": len(requests), "concurrency": concurrency, "wall_s": round(wall, 2),
        "time_limit_s": time_limit, "stopped_by_time_limit": len(latencies) < len(requests), "statuses": statuses,
        "requests_per_s": round(len(latencies) / wall, 2),
        **({f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)} if len(ms) else {}),
        **({"mean_ms": round(float(ms.mean()), 2), "max_ms": round(float(ms.max()), 2)} if len(ms) else {}),
    }


def post_phase(products: list[dict], batch: int, base_url: str, time_limit: float) -> dict:
    """POST `products` in batches of `batch` from one client; throughput in products per second."""
    chunks = [products[i : i + batch] for i in range(0, len(products), batch)]
    result = run_phase([lambda c, b=b: c.post("/products", json=b if batch > 1 else b[0]) for b in chunks],
                       base_url, 1, time_limit)
    sent = min(result["requests"] * batch, len(products))
    return {**result, "batch": batch, "products": sent, "products_per_s": round(sent / result["wall_s"], 2)}


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data", help="holds fashion/")
    parser.add_argument("--similar", type=int, default=2000)
    parser.add_argument("--search", type=int, default=500)
    parser.add_argument("--singles", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--phase-seconds", type=float, default=180.0)
    args = parser.parse_args()

    build = build_workspace(args.data_dir)
    served = WORK / "run-ws"  # a fresh copy each run: the POSTs must not grow the cached 20k workspace
    shutil.rmtree(served, ignore_errors=True)
    shutil.copytree(WORK / "ws", served)
    load_before = os.getloadavg()
    rng = random.Random(SEED)
    ids = [json.loads(line)["id"] for line in (WORK / "catalog.jsonl").read_text().splitlines()]
    titles = [json.loads(line).get("title", "") for line in (WORK / "catalog.jsonl").read_text().splitlines()]
    fresh = json.loads((WORK / "new_products.json").read_text())
    run_id = f"r{int(time.time())}"  # new products get fresh ids each run, so every POST is a real insert
    fresh = [{**p, "id": f"{run_id}-{p['id']}"} for p in fresh]
    singles, batched = fresh[: args.singles], fresh[args.singles :]

    service = Service(served)
    try:
        similar = [lambda c, i=rng.choice(ids): c.get(f"/similar/{i}", params={"k": 10}) for _ in range(args.similar)]
        queries = [" ".join(rng.choice(titles).split()[:3]) for _ in range(args.search)]
        search = [lambda c, q=q: c.get("/search", params={"q": q, "size": 10}) for q in queries]
        run_phase(similar[:50], service.url, 1, 60)  # warm-up: caches, FAISS pages, code paths
        phases = {
            "similar": run_phase(similar, service.url, args.concurrency, args.phase_seconds),
            "search": run_phase(search, service.url, args.concurrency, args.phase_seconds),
            "post_single": post_phase(singles, 1, service.url, args.phase_seconds),
        }
        readers: dict = {}
        reads = [lambda c, i=rng.choice(ids): c.get(f"/similar/{i}", params={"k": 10}) for _ in range(args.similar)]
        reader = threading.Thread(target=lambda: readers.update(run_phase(reads, service.url, 2, args.phase_seconds)))
        reader.start()
        phases["post_batch_50"] = post_phase(batched, 50, service.url, args.phase_seconds)
        reader.join()
        phases["similar_during_batch_posts"] = readers
        health = httpx.get(f"{service.url}/healthz", timeout=60).json()
    finally:
        service.stop()
    load_after = os.getloadavg()

    results = {
        "what": "shoptag service load check: real `shoptag serve` (uvicorn, 1 worker) on 127.0.0.1, httpx clients "
                "in threads of a second process on the same machine",
        "machine": machine(), "load_average_before": load_before, "load_average_after": load_after,
        "concurrent_with": "other engineers' jobs on the same 2 cores (see the load averages); the load "
                           "generator also shares the cores with the service",
        "workspace": {"products": CATALOG_SIZE, "dataset": "fashion (first 20,000 rows)", "text_model": "minilm",
                      "image_model": None, "backend": "embedded (SQLite FTS5 + FAISS Flat)", "build": build},
        "service_start_s": service.start_s, "health_after": health, "phases": phases,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "service_load.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    (RESULTS / "service_load.md").write_text(markdown(results))
    print(markdown(results))


def markdown(r: dict) -> str:
    p = r["phases"]
    rows = [
        f"| GET /similar (k=10), {p['similar']['concurrency']} clients | {p['similar']['requests']} | "
        f"{p['similar'].get('p50_ms')} | {p['similar'].get('p95_ms')} | {p['similar'].get('p99_ms')} | "
        f"{p['similar']['requests_per_s']} req/s |",
        f"| GET /search (hybrid), {p['search']['concurrency']} clients | {p['search']['requests']} | "
        f"{p['search'].get('p50_ms')} | {p['search'].get('p95_ms')} | {p['search'].get('p99_ms')} | "
        f"{p['search']['requests_per_s']} req/s |",
        f"| POST /products, 1 product per request | {p['post_single']['requests']} | "
        f"{p['post_single'].get('p50_ms')} | {p['post_single'].get('p95_ms')} | {p['post_single'].get('p99_ms')} | "
        f"**{p['post_single']['products_per_s']} products/s** |",
        f"| POST /products, batches of 50 | {p['post_batch_50']['requests']} | "
        f"{p['post_batch_50'].get('p50_ms')} | {p['post_batch_50'].get('p95_ms')} | "
        f"{p['post_batch_50'].get('p99_ms')} | **{p['post_batch_50']['products_per_s']} products/s** |",
        f"| GET /similar while batches are posted, 2 clients | {p['similar_during_batch_posts']['requests']} | "
        f"{p['similar_during_batch_posts'].get('p50_ms')} | {p['similar_during_batch_posts'].get('p95_ms')} | "
        f"{p['similar_during_batch_posts'].get('p99_ms')} | "
        f"{p['similar_during_batch_posts']['requests_per_s']} req/s |",
    ]
    m = r["machine"]
    return "\n".join([
        "# Service load check",
        "",
        f"{r['what']}. Workspace: {r['workspace']['products']:,} fashion products, text encoder "
        f"`{r['workspace']['text_model']}`, {r['workspace']['backend']}.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB. Load average (1/5/15 min) before "
        f"{', '.join(f'{x:.2f}' for x in r['load_average_before'])}, after "
        f"{', '.join(f'{x:.2f}' for x in r['load_average_after'])}: {r['concurrent_with']}, so these figures "
        "are lower bounds for an idle machine.",
        "",
        "| phase | requests | p50 ms | p95 ms | p99 ms | throughput |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Every phase is bounded by its request count and by {p['similar']['time_limit_s']:.0f} s; statuses: "
        + "; ".join(f"{name} {v['statuses']}" for name, v in p.items()) + ".",
        f"Service start (encoder load, index check): {r['service_start_s']} s. After the run: {r['health_after']}.",
        "",
    ])


if __name__ == "__main__":
    main()
