"""End-to-end `shoptag reindex` of the fashion catalog (embedded backend, text encoder MiniLM), timed as a user
runs it: each step is a fresh `shoptag` process, so start-up and model loading count.

Steps: ingest; full reindex with an empty embedding cache and no ONNX export of the text model yet (encodes
every product, exporting the model for ONNX Runtime first); full reindex again (every vector cached); edit the
titles of 1% of the products in a copy of the catalog and ingest it; then
``reindex --incremental``. The figure that matters is full (cold) / incremental: the embedding cache and the
indexed-document hashes must make the incremental run at least 20 times faster.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from bench_common import Output, catalog_limit, fashion_catalog_file, fashion_workspace, parse_args, run_measured

EDITED_SHARE = 0.01
REQUIRED_RATIO = 20.0
CUDA_BATCH = 1024


def edited_catalog(catalog: Path, out: Path) -> int:
    """Copy `catalog` to `out` with the titles of 1% of its products (a seeded draw) changed; returns how many."""
    lines = catalog.read_text(encoding="utf-8").splitlines()
    rng = np.random.default_rng(2)
    chosen = set(rng.choice(len(lines), max(1, round(EDITED_SHARE * len(lines))), replace=False).tolist())
    edited = []
    for row, line in enumerate(lines):
        record = json.loads(line)
        if row in chosen:
            record["title"] = f"{record['title']} - new season edition"
        edited.append(json.dumps(record, ensure_ascii=False))
    out.write_text("\n".join(edited) + "\n", encoding="utf-8")
    return len(chosen)


def main() -> None:
    args = parse_args(__doc__)
    output = Output()
    limit = catalog_limit(args.quick)
    workspace = fashion_workspace(args.work, limit)
    shutil.rmtree(workspace, ignore_errors=True)
    catalog = fashion_catalog_file(args.work, args.data_dir, limit)
    products = sum(1 for _ in catalog.open(encoding="utf-8"))
    edited = args.work / f"{catalog.stem}-edited.jsonl"
    changed = edited_catalog(catalog, edited)

    onnx_cache = args.work / "onnx-cache"  # empty: the cold run pays for the one-time ONNX export too
    shutil.rmtree(onnx_cache, ignore_errors=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "SHOPTAG_ENCODERS__DEVICE": args.device, "SHOPTAG_ENCODERS__TEXT_MODEL": "minilm",
           "SHOPTAG_ENCODERS__IMAGE_MODEL": "", "SHOPTAG_ENCODERS__ONNX_CACHE": str(onnx_cache),
           # the workspace bench_search reuses: its storefront query filters and buckets the year as a number
           "SHOPTAG_CATALOG__NUMERIC_ATTRIBUTES": '["price", "year"]'}
    env.pop("SHOPTAG_ES__URL", None)  # the embedded backend
    if args.device == "cuda":
        env["SHOPTAG_ENCODERS__BATCH_SIZE"] = str(CUDA_BATCH)
    shoptag = [str(Path(sys.executable).parent / "shoptag")]
    where = ["--workspace", str(workspace), "--json"]
    steps = {
        "ingest": [*shoptag, "ingest", str(catalog), *where],
        "reindex full, cold cache": [*shoptag, "reindex", *where],
        "reindex full, warm cache": [*shoptag, "reindex", *where],
        "ingest 1% edited": [*shoptag, "ingest", str(edited), *where],
        "reindex incremental": [*shoptag, "reindex", "--incremental", *where],
    }
    seconds = {}
    for name, command in steps.items():
        run = run_measured(command, env)
        if run.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {run.returncode}")
        seconds[name] = run.seconds
        report = json.loads(run.stdout) if run.stdout.strip() else {}
        n = changed if "1%" in name or "incremental" in name else products
        output.add("reindex (embedded)", name, run.seconds, "s", args.device, n,
                   {"peak_rss_mb": run.peak_rss_mb, "report": {k: v for k, v in report.items() if k != "failed"},
                    "catalog_products": products})
    for full in ("reindex full, cold cache", "reindex full, warm cache"):
        ratio = seconds[full] / seconds["reindex incremental"]
        output.add("reindex (embedded)", f"speed-up incremental vs {full.removeprefix('reindex ')}", ratio, "x",
                   args.device, products, {"required": REQUIRED_RATIO if "cold" in full else None})
    output.add("reindex (embedded)", "full reindex throughput, cold cache",
               products / seconds["reindex full, cold cache"], "products/s", args.device, products)
    output.write(args.out)


if __name__ == "__main__":
    main()
