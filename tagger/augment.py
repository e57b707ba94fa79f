"""Image transforms for product photos: what may change without changing the product's tags.

Catalog photos show one product centred on a plain (mostly white) background, often portrait (the
fashion set is 60×80). So both transforms first fit the whole photo into a white square instead of
cropping its top and bottom away. Training then adds what a second photo of the same product could
show: a mild zoom/shift (RandomResizedCrop, 80–100 % of the area, near-square ratio), a left–right
mirror, and slight brightness/contrast/saturation jitter. No hue shift and no greyscale, because colour
is a tag (a jittered red dress must not look orange), and no vertical flip or rotation, because shoes
and garments have an up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image, ImageOps
from torchvision import transforms

WHITE = (255, 255, 255)

ImageTransform = Callable[[Image.Image], torch.Tensor]


class FitToSquare:
    """Resize to fit a `size`×`size` square keeping the aspect ratio, and pad with white."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        return ImageOps.pad(image.convert("RGB"), (self.size, self.size), color=WHITE)


def eval_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> ImageTransform:
    """The deterministic transform used to encode images (and to evaluate during training)."""
    return transforms.Compose([FitToSquare(size), transforms.ToTensor(), transforms.Normalize(mean, std)])


def train_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> ImageTransform:
    """Random views of a product photo that keep its colour, shape and orientation."""
    return transforms.Compose(
        [
            FitToSquare(size),
            transforms.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.05, hue=0.0),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
