"""`make bench-scale`: the kNN tagging stage on the local engine and on Ray (a local cluster of `--workers` CPUs)
for synthetic catalogs of 100k and 1M products and the real 44k fashion catalog; products tagged/s and the peak
memory of the driver and of the largest worker. Writes bench/results/scale.json and scale.md.

Each (catalog, engine) runs in its own process (`bench_ray_scale.py`), so each peak is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench_common import ROOT, WORK, machine, run_measured

RESULTS = ROOT / "bench" / "results"


def cases(sizes: list[int], fashion: bool) -> list[tuple[str, ...]]:
    """(catalog, its arguments) in run order: small first, so an interrupted run keeps the cheap figures."""
    return [("synthetic", "--size", str(s)) for s in sizes] + ([("fashion",)] if fashion else [])


def row(run: dict) -> str:
    """One table line: the engine's figures, or the failure."""
    f = {fig["figure"].split(" (")[0]: fig for fig in run["figures"]}
    if "kNN tagging" not in f:
        return f"| {run['catalog']} | | {run['engine']} | failed (exit {run['rc']}) | | | | | | | | | |"
    rate, driver, worker = f["kNN tagging"], f["driver peak RSS"], f.get("worker peak RSS")
    worker_mb = f"{worker['value']:,.0f}" if worker else "–"
    raw, recall = f.get("raw faiss search"), rate["extra"].get("recall@10")
    raw_cells = f"{raw['value']:,.0f} | {rate['value'] / raw['value']:.2f}× | {recall:.3f}" if raw else "– | – | –"
    return (f"| {run['catalog']} | {rate['n']:,} | {run['engine']} | {rate['extra']['factory']} |"
            f" {rate['extra']['queries']:,} | {rate['value']:,.0f} | {raw_cells} | {driver['value']:,.0f} |"
            f" {worker_mb} | {run['peak_rss_mb']:,.0f} |"
            f" {run['load_1m'][0]:.1f} → {run['load_1m'][1]:.1f} |")


def markdown(runs: list[dict], started: str) -> str:
    lines = [
        "# Local engine vs Ray (local cluster): kNN tagging at scale",
        "",
        f"Run {started} with `bench/scale.py {' '.join(sys.argv[1:])}` on {machine('cpu')}. A fifth of each catalog"
        " is labelled (the index); *tagged* products of the rest are tagged. *process peak*: the largest resident"
        " set among the benchmark process and the processes it waited for (`os.wait4`); *load 1m*: the 1-minute"
        " load average at the start → end of the process (other work on the machine slows the figures). *raw faiss"
        " search*: the same index searched with the same parameters, batches and k, nothing around it (local"
        " runs); *recall@10*: that index against exact search on 1,000 of the queries.",
        "",
        "| catalog | n | engine | index | tagged | products tagged/s | raw faiss search queries/s | tagged / raw |"
        " recall@10 | driver peak MB | largest worker peak MB | process peak MB | load 1m |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *(row(run) for run in runs),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="synthetic catalog sizes")
    parser.add_argument("--queries", type=int, default=100_000, help="products tagged per catalog")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="Ray actors")
    parser.add_argument("--no-fashion", action="store_true", help="skip the real 44k catalog")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    args.results.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    runs = []
    for case in cases([int(s) for s in args.sizes.split(",") if s], not args.no_fashion):
        for engine in ("local", "ray"):
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
                out = Path(handle.name)
            command = [sys.executable, str(ROOT / "bench" / "bench_ray_scale.py"), "--out", str(out), "--work",
                       str(args.work), "--catalog", *case, "--engine", engine, "--queries", str(args.queries),
                       "--workers", str(args.workers)]
            print(f"[scale] {' '.join(case)} on {engine} ...", file=sys.stderr, flush=True)
            load_start = os.getloadavg()[0]
            run = run_measured(command, {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
            result = json.loads(out.read_text()) if run.returncode == 0 and out.stat().st_size else {"figures": [], "notes": []}
            out.unlink(missing_ok=True)
            runs.append({"catalog": case[0], "size": case[2] if len(case) > 2 else None, "engine": engine,
                         "rc": run.returncode, "wall_s": run.seconds, "peak_rss_mb": run.peak_rss_mb,
                         "load_1m": [load_start, os.getloadavg()[0]], **result})
            print(f"[scale] done in {run.seconds:.0f}s (exit {run.returncode})", file=sys.stderr, flush=True)
            (args.results / "scale.json").write_text(json.dumps({"started": started, "argv": sys.argv[1:],
                                                                 "machine": machine("cpu"), "runs": runs}, indent=1) + "\n")
            (args.results / "scale.md").write_text(markdown(runs, started))


if __name__ == "__main__":
    main()
