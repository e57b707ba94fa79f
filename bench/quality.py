"""`make bench-quality`: held-out tagging quality on the public data, every method side by side.

For each data set: build the catalog (`shoptag datasets`), ingest it into its own workspace, run
`shoptag evaluate --report`. Results land in bench/results/quality-<name>/ (report.md, report.html, plots,
results.json). Needs ../shared/data (or SHOPTAG_DATA_DIR); says so and exits 0 when it is absent.

With ``--clip-checkpoint`` (a `shoptag train-clip` model.pt) the fashion catalog is built with its photos and
evaluated three times on the same split, ``--modality text``, ``image`` and ``text+image`` (zero-shot CLIP
beside the other methods), with one side-by-side report in bench/results/quality-<name>-modalities/.
"""

from __future__ import annotations

import argparse
import json
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


def evaluate(env: dict[str, str], out: Path, *extra: str) -> dict:
    """`shoptag evaluate --report out --json` (plus `extra`); its results, also saved as out/results.json."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.json").open("w") as fh:
        subprocess.run([sys.executable, "-m", "shoptag.cli", "evaluate", "--report", str(out), "--json", *extra],
                       check=True, stdout=fh, env={**os.environ, **env})
    return json.loads((out / "results.json").read_text())


def run(name: str, limit: int | None, clip: tuple[str, str] | None) -> None:
    data_args, env = RUNS[name]
    images = clip is not None and name == "fashion"
    suffix = (f"{name}{limit}" if limit else name) + ("-images" if images else "")
    catalog = WORK / f"{suffix}.jsonl"
    workspace = WORK / f"ws-{suffix}"
    env = {**env, "SHOPTAG_WORKSPACE": str(workspace), "HF_HUB_OFFLINE": "1"}
    if images:
        assert clip is not None
        data_args = [*data_args, "--images"]
        env |= {"SHOPTAG_ENCODERS__IMAGE_MODEL": clip[0], "SHOPTAG_ENCODERS__IMAGE_CHECKPOINT": clip[1]}
    start = time.perf_counter()
    if not catalog.exists():
        shoptag("datasets", *data_args, "--out", str(catalog), *(["--limit", str(limit)] if limit else []), env=env)
    try:
        shoptag("ingest", str(catalog), "--json", env=env)
    except subprocess.CalledProcessError as exc:
        if exc.returncode != 3:  # 3: some records rejected, the run went on
            raise
    if not images:
        out = RESULTS / f"quality-{suffix}"
        evaluate(env, out)
        print(f"{name}: {time.perf_counter() - start:.0f} s, report in {out}")
        return
    from shoptag.pipeline.report import write_report

    by_modality, notes = {}, [f"image tower {clip[0]} from {clip[1]}", "same products, same split"]
    text_only = RESULTS / f"quality-{suffix.removesuffix('-images')}" / "results.json"
    for modality in ("text", "image", "text+image"):
        if modality == "text" and text_only.is_file():  # the text-only run of the same products: same computation
            by_modality[modality] = json.loads(text_only.read_text())
            notes.append(f"text: the results of {text_only.relative_to(ROOT)}")
            continue
        out = RESULTS / f"quality-{suffix}-{modality.replace('+', '-')}"
        by_modality[modality] = evaluate(env, out, "--modality", modality)
        print(f"{name} {modality}: {time.perf_counter() - start:.0f} s so far", flush=True)
    combined = RESULTS / f"quality-{suffix}-modalities"
    write_report(by_modality, combined, title=f"shoptag quality by modality: {name}", notes=notes)
    print(f"{name}: {time.perf_counter() - start:.0f} s, report in {combined}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=sorted(RUNS), action="append")
    parser.add_argument("--limit", type=int, help="fashion: first N products only")
    parser.add_argument("--clip-checkpoint", help="fashion: also tag from the photos with this CLIP model.pt")
    parser.add_argument("--clip-model", default="shoptag-small", help="open_clip architecture of --clip-checkpoint")
    args = parser.parse_args()
    data = Path(os.environ.get("SHOPTAG_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (data / "fashion" / "products.csv").is_file():
        print(f"bench-quality: no public data at {data}; set SHOPTAG_DATA_DIR")
        return
    WORK.mkdir(parents=True, exist_ok=True)
    for name in args.only or sorted(RUNS):
        clip = (args.clip_model, str(Path(args.clip_checkpoint).resolve())) if args.clip_checkpoint else None
        run(name, args.limit if name == "fashion" else None, clip)


if __name__ == "__main__":
    main()
