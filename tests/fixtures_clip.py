"""Fixtures: clip. Generated photos of coloured shapes whose titles say the colour and the shape, so a
tiny CLIP can really learn in seconds on a CPU; and one shared tiny training run."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from shoptag.tagger.clip_train import Pair, TrainReport, train_clip

COLOURS = {"red": (215, 30, 35), "green": (30, 160, 60), "blue": (35, 60, 215), "yellow": (235, 205, 35)}
SHAPES = ("circle", "square", "triangle")


def shape_photo(colour: str, shape: str, rng: random.Random) -> bytes:
    """A 48×64 PNG: one shape of a random size and place on a white background, like a product shot."""
    image = Image.new("RGB", (48, 64), (255, 255, 255))
    size = rng.randint(20, 34)
    x, y = rng.randint(2, 46 - size), rng.randint(2, 62 - size)
    draw = ImageDraw.Draw(image)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse((x, y, x + size, y + size), fill=fill)
    elif shape == "square":
        draw.rectangle((x, y, x + size, y + size), fill=fill)
    else:
        draw.polygon([(x, y + size), (x + size, y + size), (x + size // 2, y)], fill=fill)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_shape_pairs(per_kind: int, seed: int) -> list[Pair]:
    """`per_kind` (png bytes, "colour shape") pairs for each of the 12 colour–shape kinds, shuffled."""
    rng = random.Random(seed)
    pairs = [
        (shape_photo(colour, shape, rng), f"{colour} {shape}")
        for colour in COLOURS
        for shape in SHAPES
        for _ in range(per_kind)
    ]
    rng.shuffle(pairs)
    return pairs


@dataclass
class TinyRun:
    """A shoptag-tiny model trained on shape photos, with the pairs it was trained and measured on."""

    report: TrainReport
    train: list[Pair]
    val: list[Pair]
    out_dir: Path


TINY_RUN = {"epochs": 4, "batch_size": 24, "lr": 3e-3, "device": "cpu", "seed": 0}


@pytest.fixture(scope="session")
def shape_pairs() -> tuple[list[Pair], list[Pair]]:
    """(train, held-out) shape pairs: 240 and 48."""
    return make_shape_pairs(20, seed=1), make_shape_pairs(4, seed=2)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, shape_pairs: tuple[list[Pair], list[Pair]]) -> TinyRun:
    """One tiny training run shared by the encoder and training tests (a few seconds on 2 cores)."""
    torch.set_num_threads(2)
    train, val = shape_pairs
    out_dir = tmp_path_factory.mktemp("tiny-clip")
    report = train_clip(train, val, out_dir, "shoptag-tiny", None, **TINY_RUN)
    return TinyRun(report, train, val, out_dir)
