"""`make bench`: run the speed and memory benchmarks, each in its own process, and write
``bench/results/speed.json`` and ``bench/results/speed.md``.

Every job records its wall time, its peak RSS (from `os.wait4`: the job and what it started), and the 1-minute
load average at its start and end, because other work on the machine slows the figures down. With
``--device cuda`` the device-dependent jobs run twice, on the CPU and on the GPU of the same machine, and each
GPU figure gets its ratio to the CPU one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench_common import ROOT, WORK, machine, run_measured

SCALES = (10_000, 100_000, 1_000_000)
QUICK_SCALES = (2_000, 20_000)
RESULTS = ROOT / "bench" / "results"
# figures where a larger value is better; the rest (seconds, latencies, memory) are better smaller
HIGHER_IS_BETTER = ("/s", "x")


@dataclass(frozen=True)
class Job:
    name: str  # what `--only` matches
    script: str
    args: tuple[str, ...] = ()
    per_device: bool = False  # run once per device when benchmarking cuda


def jobs(max_scale: int, quick: bool, text_models: str, es_docs: int = 2000) -> list[Job]:
    """The benchmarks in run order: the ones needing no catalog vectors first, then reindex, which builds the
    fashion workspace whose cached vectors knn, search and es reuse."""
    scales = [s for s in (QUICK_SCALES if quick else SCALES) if s <= max_scale]
    return [
        Job("encoders", "bench_encoders.py", ("--text-models", text_models), per_device=True),
        *(Job("scaling", "bench_scaling.py", ("--size", str(s)), per_device=True) for s in scales),
        Job("reindex", "bench_reindex.py", per_device=True),
        Job("knn", "bench_knn.py", per_device=True),
        Job("search", "bench_search.py"),
        Job("es", "bench_es.py", ("--docs", str(es_docs))),
        Job("ratios", "bench_ratios.py"),
    ]


def load_1m() -> float:
    return os.getloadavg()[0]


def run_job(job: Job, device: str, args: argparse.Namespace) -> dict:
    """Run one benchmark module; its figures plus what this process measured around it."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    command = [sys.executable, str(ROOT / "bench" / job.script), "--out", str(out), "--device", device,
               "--work", str(args.work), *job.args, *(["--quick"] if args.quick else [])]
    print(f"[bench] {job.name} {' '.join(job.args)} on {device} ...", file=sys.stderr, flush=True)
    load_start = load_1m()
    run = run_measured(command, {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    load_end = load_1m()
    # a module that failed part-way keeps the figures it wrote before the failure
    result = json.loads(out.read_text()) if out.stat().st_size else {"figures": [], "notes": []}
    out.unlink(missing_ok=True)
    if run.returncode != 0:
        result["notes"].append(f"failed with exit status {run.returncode} after {len(result['figures'])} figures: "
                               "see the run's stderr")
    print(f"[bench] {job.name} done in {run.seconds:.0f}s, peak RSS {run.peak_rss_mb:.0f} MB", file=sys.stderr, flush=True)
    return {"job": job.name, "args": list(job.args), "device": device, "machine": machine(device), "rc": run.returncode,
            "wall_s": run.seconds, "peak_rss_mb": run.peak_rss_mb, "load_1m_start": load_start, "load_1m_end": load_end,
            **result}


def with_ratios(runs: list[dict]) -> list[dict]:
    """Every figure with its job's machine and load, and cuda figures with `ratio_to_cpu` (GPU better when > 1)."""
    rows = []
    for run in runs:
        context = {"machine": run["machine"], "load_1m": [run["load_1m_start"], run["load_1m_end"]], "job_args": run["args"]}
        rows += [{**figure, **context} for figure in run["figures"]]
        first = run["figures"][0] if run["figures"] else {"benchmark": run["job"], "n": 0}
        rows.append({"benchmark": first["benchmark"], "figure": "peak RSS", "value": run["peak_rss_mb"], "unit": "MB",
                     "device": run["device"], "n": first["n"], "extra": {"wall_s": run["wall_s"]}, **context})
    cpu = {(r["benchmark"], r["figure"], *r["job_args"]): r["value"] for r in rows if r["device"] == "cpu"}
    for row in rows:
        base = cpu.get((row["benchmark"], row["figure"], *row["job_args"]))
        if row["device"] == "cuda" and base:
            better_high = row["unit"].endswith(HIGHER_IS_BETTER)
            row["ratio_to_cpu"] = row["value"] / base if better_high else base / row["value"]
    return rows


def markdown(rows: list[dict], started: str, notes: list[str]) -> str:
    """One table of every figure, with the machine and the load it was measured under."""
    ratios = any("ratio_to_cpu" in r for r in rows)
    lines = [
        "# Speed and memory",
        "",
        f"Last run {started} with `bench/run.py {' '.join(sys.argv[1:])}` (with `--only`, the other jobs' rows are"
        " kept from the run before)."
        " Other jobs may share the machine: *load 1m* is the 1-minute load average at the start → end of the"
        " benchmark's process (the machine has the cores stated in *machine*; a load above that count means the"
        " figures are slowed by other work). Every figure and the raw samples are in `speed.json`.",
        "",
        "| benchmark | figure | value | unit | device | machine | n | load 1m |" + (" GPU / CPU |" if ratios else ""),
        "|---|---|---:|---|---|---|---:|---|" + ("---:|" if ratios else ""),
    ]
    for r in rows:
        ratio = (f" {r['ratio_to_cpu']:.1f}× |" if "ratio_to_cpu" in r else " |") if ratios else ""
        factory = r["extra"].get("factory")
        figure = f"{r['figure']} [{factory}]" if factory else r["figure"]
        lines.append(f"| {r['benchmark']} | {figure} | {r['value']:,.{3 if abs(r['value']) < 10 else 1}f} | {r['unit']} |"
                     f" {r['device']} | {r['machine']} | {r['n']:,} | {r['load_1m'][0]:.1f} → {r['load_1m'][1]:.1f} |{ratio}")
    if notes:
        lines += ["", "Notes:", "", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def previous_runs(args: argparse.Namespace) -> list[dict]:
    """With `--only`, the runs of the other jobs in the existing speed.json, so re-measuring one job keeps the rest."""
    path = args.results / "speed.json"
    if not args.only or not path.is_file():
        return []
    return [run for run in json.loads(path.read_text())["runs"] if run["job"] not in args.only]


def write_results(runs: list[dict], started: str, args: argparse.Namespace) -> None:
    """speed.json (every run with its raw figures, and the flat figure list) and speed.md (the table)."""
    rows = with_ratios(runs)
    notes = [f"{r['job']} {' '.join(r['args'])} ({r['device']}): {note}" for r in runs for note in r["notes"]]
    args.results.mkdir(parents=True, exist_ok=True)
    summary = {"started": started, "argv": sys.argv[1:], "quick": args.quick, "device": args.device, "runs": runs,
               "figures": rows}
    (args.results / "speed.json").write_text(json.dumps(summary, indent=1) + "\n")
    (args.results / "speed.md").write_text(markdown(rows, started, notes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", action="append", help="run only this benchmark (repeatable): "
                        "reindex, encoders, knn, search, es, scaling, ratios")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="cuda: device-dependent benchmarks run on the CPU and the GPU, with ratios")
    parser.add_argument("--max-scale", type=int, default=1_000_000, help="largest synthetic catalog for scaling")
    parser.add_argument("--text-models", default="minilm,use-multilingual",
                        help="text encoders the encoders job times: aliases or local sentence-transformers folders")
    parser.add_argument("--es-docs", type=int, default=2000,
                        help="documents the es job indexes into noida-db: its searches are brute force (hybrid 0.6 s "
                             "at 2,000 docs), so at 10,000 the job's 200 timed queries take over 9 minutes")
    parser.add_argument("--work", type=Path, default=WORK, help="scratch folder (git-ignored)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where speed.json and speed.md go")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    kept = previous_runs(args)
    runs = list(kept)
    for job in jobs(args.max_scale, args.quick, args.text_models, args.es_docs):
        if args.only and job.name not in args.only:
            continue
        for device in ("cpu", "cuda") if args.device == "cuda" and job.per_device else ("cpu",):
            runs.append(run_job(job, device, args))
            write_results(runs, started, args)  # after every job, so an interrupted run keeps what it measured
    failed = [r["job"] for r in runs[len(kept):] if r["rc"] != 0]
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
