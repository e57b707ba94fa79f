"""Draw the tiny product pictures used by `sample_catalog.jsonl`, so the demo has images without shipping photos.

Each is a 64x64 JPEG: a flat silhouette of the product type in the product's colour on a grey background.
It also writes `corrupt-truncated.jpg`, a JPEG cut in half, which `bad_catalog.jsonl` uses to show that
a broken image is rejected. Run from anywhere: `python examples/make_images.py` rewrites `examples/images/`.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 64
BACKGROUND = (214, 214, 214)
OUTLINE = (40, 40, 40)
Shape = list[tuple[int, int]]

# Polygons on a 64x64 canvas, one per product type.
SHAPES: dict[str, list[Shape]] = {
    "jeans": [[(18, 6), (46, 6), (50, 58), (36, 58), (32, 24), (28, 58), (14, 58)]],
    "dress": [[(26, 6), (38, 6), (40, 22), (54, 58), (10, 58), (24, 22)]],
    "tshirt": [[(22, 8), (42, 8), (58, 20), (50, 28), (46, 24), (46, 58), (18, 58), (18, 24), (14, 28), (6, 20)]],
    "shirt": [[(24, 6), (40, 6), (56, 18), (52, 56), (46, 56), (46, 26), (46, 58), (18, 58), (18, 26), (18, 56),
               (12, 56), (8, 18)]],
    "sneaker": [[(6, 30), (26, 30), (34, 38), (58, 42), (58, 52), (6, 52)]],
    "backpack": [[(16, 14), (48, 14), (52, 24), (52, 58), (12, 58), (12, 24)], [(24, 36), (40, 36), (40, 50), (24, 50)]],
    "watch": [[(26, 2), (38, 2), (38, 62), (26, 62)]],
}

# File name -> (shape, RGB colour): the images `sample_catalog.jsonl` refers to.
IMAGES: dict[str, tuple[str, tuple[int, int, int]]] = {
    "jeans-navy.jpg": ("jeans", (31, 42, 84)),
    "dress-pink.jpg": ("dress", (236, 150, 180)),
    "watch-silver.jpg": ("watch", (170, 174, 180)),
    "sneaker-white.jpg": ("sneaker", (250, 250, 250)),
    "backpack-black.jpg": ("backpack", (25, 25, 25)),
    "tshirt-white.jpg": ("tshirt", (250, 250, 250)),
    "shirt-white.jpg": ("shirt", (248, 248, 244)),
    "shirt-navy.jpg": ("shirt", (31, 42, 84)),
}


def draw(shape: str, colour: tuple[int, int, int]) -> Image.Image:
    """One silhouette; a watch also gets its round face so it reads as a watch, not a strap."""
    image = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    pen = ImageDraw.Draw(image)
    for polygon in SHAPES[shape]:
        pen.polygon(polygon, fill=colour, outline=OUTLINE)
    if shape == "watch":
        pen.ellipse((18, 18, 46, 46), fill=colour, outline=OUTLINE, width=2)
        pen.ellipse((22, 22, 42, 42), fill=(245, 245, 240))
        pen.line((32, 32, 32, 24), fill=OUTLINE, width=2)
        pen.line((32, 32, 38, 34), fill=OUTLINE, width=2)
    return image


def main() -> None:
    folder = Path(__file__).resolve().parent / "images"
    folder.mkdir(exist_ok=True)
    for name, (shape, colour) in IMAGES.items():
        draw(shape, colour).save(folder / name, "JPEG", quality=80)
    whole = io.BytesIO()
    draw("shirt", (200, 60, 60)).save(whole, "JPEG", quality=80)
    (folder / "corrupt-truncated.jpg").write_bytes(whole.getvalue()[: whole.tell() // 2])


if __name__ == "__main__":
    main()
