"""Train CLIP on the fashion image–title pairs and log held-out image→title recall@1/@10 per epoch.

CPU (what this repo's machines have; budgeted to finish in about half an hour):
    nice .venv/bin/python bench/train_clip_fashion.py --limit 6000 --epochs 3 --time-budget-min 28
H100 (from scratch with the larger config, all 44k pairs):
    .venv/bin/python bench/train_clip_fashion.py --model shoptag-base --device cuda --amp \
        --batch-size 512 --epochs 30 --lr 1e-3 --workers 8 --limit 0 --tag h100-base
H100 (fine-tuning a pretrained checkpoint where the hub is reachable, or from a local file):
    .venv/bin/python bench/train_clip_fashion.py --model ViT-B-32 --checkpoint laion2b_s34b_b79k \
        --device cuda --amp --batch-size 256 --epochs 5 --lr 1e-5 --workers 8 --limit 0 --tag h100-vitb32
Writes bench/results/clip_fashion[-TAG].json and .md; the model lands in bench/work/clip-fashion[-TAG]/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from shoptag.core.settings import EncoderSettings, Settings
from shoptag.pipeline.train_clip import run_train_clip
from shoptag.tagger.clip_train import TrainReport, fashion_pairs

ROOT = Path(__file__).resolve().parents[1]


def machine(device: str) -> str:
    """The machine in words, for the results."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return f"CPU, {torch.get_num_threads()} threads on {os.cpu_count()} cores ({platform.processor() or platform.machine()})"


def markdown(report: TrainReport, args: argparse.Namespace, wall_s: float, where: str) -> str:
    """The results table a person reads."""
    lines = [
        f"# CLIP on the fashion photos: {report.model_name}" + (f" from {args.checkpoint}" if args.checkpoint else " from scratch"),
        "",
        f"- machine: {where}; wall time {wall_s / 60:.1f} min; steps {report.steps} at batch {args.batch_size}, lr {args.lr}",
        f"- pairs: {report.n_train} train, {report.n_val} held out (validation split by id hash; "
        f"first {args.limit or 'all'} products of products.csv)",
        "- recall: share of held-out photos whose own title ranks in the top k among the "
        f"{report.n_val_titles} distinct held-out titles (chance: recall@1 {1 / max(report.n_val_titles, 1):.2%}, "
        f"recall@10 {min(1.0, 10 / max(report.n_val_titles, 1)):.2%})",
        "",
        "| epoch | step | train loss | recall@1 | recall@10 | seconds |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in report.epochs:
        lines.append(
            f"| {e.epoch} | {e.step} | {e.train_loss:.3f} | {e.recall_at_1:.3f} | {e.recall_at_10:.3f} | {e.seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "fashion")
    parser.add_argument("--model", default="shoptag-small")
    parser.add_argument("--checkpoint", default=None, help="pretrained tag or local file to fine-tune")
    parser.add_argument("--limit", type=int, default=6000, help="first N products (0: all 44k)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bf16/fp16 autocast (CUDA only)")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--time-budget-min", type=float, default=None)
    parser.add_argument("--tag", default="", help="suffix of the results files")
    args = parser.parse_args()
    if not (args.data_dir / "products.csv").exists():
        raise SystemExit(f"fashion data not found in {args.data_dir}")
    torch.set_num_threads(args.threads)
    suffix = f"-{args.tag}" if args.tag else ""
    started = time.perf_counter()
    report = run_train_clip(
        fashion_pairs(args.data_dir, limit=args.limit or None),
        ROOT / "bench" / "work" / f"clip-fashion{suffix}",
        Settings(encoders=EncoderSettings(device=args.device)),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        model_name=args.model,
        checkpoint=args.checkpoint,
        amp=args.amp,
        num_workers=args.workers,
        time_budget_s=args.time_budget_min * 60 if args.time_budget_min else None,
    )
    wall_s = time.perf_counter() - started
    where = machine(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    summary = report.to_dict() | {"machine": where, "wall_s": round(wall_s, 1), "args": vars(args) | {"data_dir": str(args.data_dir)}}
    summary["losses"] = [round(x, 4) for x in report.losses]
    (results / f"clip_fashion{suffix}.json").write_text(json.dumps(summary, indent=2, default=str))
    (results / f"clip_fashion{suffix}.md").write_text(markdown(report, args, wall_s, where))
    print(markdown(report, args, wall_s, where))


if __name__ == "__main__":
    main()
