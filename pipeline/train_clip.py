"""`shoptag train-clip`: split a catalog's (product id, image, title) triples by id hash and train CLIP on them.

The split is the tagger's own (`split_of` with the tagger's validation and test fractions), so CLIP never
trains on the products that `shoptag evaluate` tests on or the tagger calibrates on: it learns from the
train split and reports image→title recall on the validation split.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from shoptag.core.settings import Settings
from shoptag.tagger.clip_train import Pair, TrainReport, train_clip
from shoptag.tagger.image_encoder import ImageSource
from shoptag.tagger.split import split_of

DEFAULT_MODEL = "shoptag-small"  # when settings name no image model: trains from scratch on a CPU


def run_train_clip(
    items: Iterable[tuple[str, ImageSource, str]],
    out_dir: Path,
    settings: Settings,
    *,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 5e-4,
    max_steps: int | None = None,
    resume: bool = True,
    model_name: str | None = None,
    checkpoint: str | None = None,
    amp: bool = True,
    num_workers: int = 0,
    time_budget_s: float | None = None,
) -> TrainReport:
    """Train on the train split of `items` and measure on its validation split; items without a title are skipped.

    `model_name` / `checkpoint` default to `settings.encoders.image_model` (else shoptag-small) and
    `settings.encoders.image_checkpoint` (None: from scratch).
    """
    splits: dict[str, list[Pair]] = {"train": [], "val": [], "test": []}
    fractions = settings.tagger.validation_fraction, settings.tagger.test_fraction
    for product_id, image, title in items:
        if title and title.strip():
            splits[split_of(str(product_id), *fractions)].append((image, title.strip()))
    return train_clip(
        splits["train"],
        splits["val"],
        out_dir,
        model_name or settings.encoders.image_model or DEFAULT_MODEL,
        checkpoint if checkpoint is not None else settings.encoders.image_checkpoint,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        device=settings.encoders.device,
        resume=resume,
        max_steps=max_steps,
        seed=settings.tagger.seed,
        amp=amp,
        num_workers=num_workers,
        time_budget_s=time_budget_s,
    )
