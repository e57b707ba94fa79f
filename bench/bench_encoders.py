"""Encoder throughput on real fashion data: text encoders in products/s on titles, the CLIP image tower in
images/s on the catalog's JPEGs, reading and decoding them from the zip included.

The image model has random weights: throughput does not depend on the weights, and no trained checkpoint can
be assumed. On cuda the encoders run fp16 with large batches (what `Encoders` does on a GPU).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench_common import Output, Timer, fashion_photos, fashion_titles, parse_args

# (products or images per run, batch size): full / quick, per device
SIZES = {
    ("cpu", False): {"text": 1000, "use": 1000, "image": 1000, "text_batch": 64, "image_batch": 128},
    ("cpu", True): {"text": 64, "use": 32, "image": 64, "text_batch": 32, "image_batch": 32},
    ("cuda", False): {"text": 40000, "use": 0, "image": 40000, "text_batch": 1024, "image_batch": 1024},
    ("cuda", True): {"text": 2048, "use": 0, "image": 2048, "text_batch": 512, "image_batch": 512},
}


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-models", default="minilm,use-multilingual",
                        help="comma-separated text encoder aliases or local sentence-transformers folders")
    parser.add_argument("--image-models", default=None,
                        help="comma-separated open_clip configs (default: shoptag-small; quick: shoptag-tiny; cuda adds shoptag-base)")


def text_throughput(
    output: Output, alias: str, titles: list[str], device: str, batch: int, onnx_cache: Path | None = None
) -> None:
    """Products/s of one text encoder (model loading not timed; one untimed warm-up batch); with `onnx_cache`,
    a sentence-transformers model run by ONNX Runtime (what `Encoders` uses on the CPU)."""
    from shoptag.tagger.text_encoder import load_text_encoder

    with Timer() as load:
        encoder = load_text_encoder(alias, device, batch, onnx_cache=onnx_cache)
        encoder.encode(titles[:batch])  # warm-up (and, with onnx_cache, the one-time export)
    with Timer() as t:
        encoder.encode(titles)
    name = f"text {alias}" + (" (onnxruntime)" if onnx_cache else "")
    output.add("encoders", name, len(titles) / t.seconds, "products/s", device, len(titles),
               {"batch_size": batch, "load_and_warm_up_s": load.seconds, "dim": encoder.dim})


def image_throughput(output: Output, model: str, photos: list[bytes], device: str, batch: int) -> None:
    """Images/s of one CLIP image tower from JPEG bytes (decode + resize + forward)."""
    from shoptag.tagger.image_encoder import ImageEncoder

    encoder = ImageEncoder(model, None, device, batch)
    encoder.encode(photos[:batch])
    with Timer() as t:
        encoder.encode(photos)
    output.add("encoders", f"image {model}", len(photos) / t.seconds, "images/s", device, len(photos),
               {"batch_size": batch, "dim": encoder.dim, "includes": "JPEG decode from bytes, resize, forward",
                "fp16": device == "cuda"})


def main() -> None:
    args = parse_args(__doc__, options)
    size = SIZES[(args.device, args.quick)]
    output = Output()
    titles = fashion_titles(args.data_dir, max(size["text"], size["use"]))
    for model in args.text_models.split(","):
        if model != "use-multilingual":
            text_throughput(output, model, titles[: size["text"]], args.device, size["text_batch"])
            if args.device == "cpu":
                with tempfile.TemporaryDirectory() as onnx_cache:
                    text_throughput(output, model, titles[: size["text"]], args.device, size["text_batch"], Path(onnx_cache))
        elif size["use"]:
            text_throughput(output, model, titles[: size["use"]], args.device, size["text_batch"])
        else:
            output.notes.append("use-multilingual runs in numpy on the CPU only: no cuda figure")
    default = "shoptag-tiny" if args.quick else "shoptag-small" + (",shoptag-base" if args.device == "cuda" else "")
    photos = list(fashion_photos(args.data_dir, size["image"]))
    for model in (args.image_models or default).split(","):
        image_throughput(output, model, photos, args.device, size["image_batch"])
    output.write(args.out)


if __name__ == "__main__":
    main()
