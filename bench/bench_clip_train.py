"""CLIP-training throughput on the fashion photo–title pairs: training pairs/s for a fixed number of optimizer
steps (`train_clip` from scratch, fp16 autocast on cuda, the images decoded by `--workers` loader processes).

The epoch time `train_clip` reports includes the held-out recall it computes at the epoch's end, so the figure
is a slight underestimate of the pure training speed.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench_common import Output, Timer, parse_args

# (pairs, batch size, steps, model): full / quick, per device
SIZES = {
    ("cpu", False): (2000, 64, 20, "shoptag-small"),
    ("cpu", True): (160, 16, 4, "shoptag-tiny"),
    ("cuda", False): (44446, 512, 200, "shoptag-base"),
    ("cuda", True): (4096, 256, 10, "shoptag-base"),
}


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=0, help="image-decoding loader processes")


def main() -> None:
    args = parse_args(__doc__, options)
    from shoptag.core.settings import EncoderSettings, Settings
    from shoptag.pipeline.train_clip import run_train_clip
    from shoptag.tagger.clip_train import fashion_pairs

    pairs, batch, steps, model = SIZES[(args.device, args.quick)]
    output = Output()
    with tempfile.TemporaryDirectory() as out_dir, Timer() as wall:
        report = run_train_clip(
            fashion_pairs(Path(args.data_dir) / "fashion", limit=pairs), Path(out_dir),
            Settings(encoders=EncoderSettings(device=args.device)), epochs=1_000, batch_size=batch, lr=1e-3,
            max_steps=steps, resume=False, model_name=model, amp=args.device == "cuda", num_workers=args.workers,
        )
    trained = report.steps * batch
    seconds = sum(e.seconds for e in report.epochs)
    output.add("clip-train", f"training {model}", trained / seconds, "pairs/s", args.device, report.n_train,
               {"steps": report.steps, "batch_size": batch, "epoch_seconds": seconds, "wall_s": wall.seconds,
                "amp": args.device == "cuda", "loader_workers": args.workers})
    output.write(args.out)


if __name__ == "__main__":
    main()
