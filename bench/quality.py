"""`make bench-quality`: held-out tagging quality on the public data, every method side by side.

For each data set: build the catalog (`shoptag datasets`), ingest it into its own workspace, run
`shoptag evaluate --report`. Results land in bench/results/quality-<name>/ (report.md, report.html, plots,
results.json). Needs ../shared/data (or SHOPTAG_DATA_DIR); says so and exits 0 when it is absent.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work"
RESULTS = ROOT / "bench" / "results"

# name -> (datasets arguments, settings as environment variables)
RUNS = {
    "fashion": (["fashion"], {"SHOPTAG_ENCODERS__TEXT_MODEL": "minilm"}),
    "taobao": (["taobao"], {"SHOPTAG_ENCODERS__TEXT_MODEL": "use-multilingual"}),
}


def shoptag(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "shoptag.cli", *args], check=True, env={**os.environ, **env})


def run(name: str, limit: int | None) -> None:
    data_args, env = RUNS[name]
    suffix = f"{name}{limit}" if limit else name
    catalog = WORK / f"{suffix}.jsonl"
    workspace = WORK / f"ws-{suffix}"
    env = {**env, "SHOPTAG_WORKSPACE": str(workspace), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    if not catalog.exists():
        shoptag("datasets", *data_args, "--out", str(catalog), *(["--limit", str(limit)] if limit else []), env=env)
    try:
        shoptag("ingest", str(catalog), "--json", env=env)
    except subprocess.CalledProcessError as exc:
        if exc.returncode != 3:  # 3: some records rejected, the run went on
            raise
    out = RESULTS / f"quality-{suffix}"
    with (WORK / f"{suffix}-evaluate.json").open("w") as fh:
        subprocess.run([sys.executable, "-m", "shoptag.cli", "evaluate", "--report", str(out), "--json"],
                       check=True, stdout=fh, env={**os.environ, **env})
    (out / "results.json").write_bytes((WORK / f"{suffix}-evaluate.json").read_bytes())
    print(f"{name}: {time.perf_counter() - start:.0f} s, report in {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=sorted(RUNS), action="append")
    parser.add_argument("--limit", type=int, help="fashion: first N products only")
    args = parser.parse_args()
    data = Path(os.environ.get("SHOPTAG_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (data / "fashion" / "products.csv").is_file():
        print(f"bench-quality: no public data at {data}; set SHOPTAG_DATA_DIR")
        return
    WORK.mkdir(parents=True, exist_ok=True)
    for name in args.only or sorted(RUNS):
        run(name, args.limit if name == "fashion" else None)


if __name__ == "__main__":
    main()
