"""Contrastive (CLIP) training of an open_clip model on a catalog's image–title pairs.

From scratch with a small shoptag config, or fine-tuning a checkpoint (a file, or a pretrained tag where
the hub is reachable). InfoNCE through open_clip's ``ClipLoss``, AdamW with linear warmup then cosine
decay, bf16/fp16 autocast on CUDA and fp32 on CPU. After every epoch the held-out image→title
recall@1/@10 is measured and two files are replaced atomically in ``out_dir``: ``last.pt`` (everything
needed to resume: model, optimizer, scheduler, scaler, step, RNG, history) and ``model.pt`` (weights,
config and metrics only: what ``ImageEncoder(model_name, checkpoint=".../model.pt")`` loads).
"""

from __future__ import annotations

import csv
import math
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from shoptag.core.errors import BadInput, Conflict
from shoptag.core.files import atomic_write
from shoptag.tagger.augment import ImageTransform, train_transform
from shoptag.tagger.image_encoder import (
    ImageEncoder,
    ImageSource,
    LoadedClip,
    as_torch_device,
    autocast,
    checkpoint_model_id,
    load_clip,
    open_image,
)
from torch.utils.data import DataLoader, Dataset

Pair = tuple[ImageSource, str]

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp on the learnt temperature


@dataclass
class EpochStats:
    """What one (possibly partial) epoch did; recall is None when there is no held-out pair."""

    epoch: int
    step: int
    train_loss: float
    recall_at_1: float | None
    recall_at_10: float | None
    seconds: float


@dataclass
class TrainReport:
    """Where the model landed and how it learnt."""

    model_name: str
    model_id: str  # the id ImageEncoder gives the saved model.pt: vectors with another id are stale
    model_path: Path
    checkpoint_path: Path
    device: str
    n_train: int
    n_val: int
    n_val_titles: int  # distinct held-out titles: chance recall@k is k / this
    steps: int
    resumed_from_step: int
    epochs: list[EpochStats] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings."""
        data = asdict(self)
        data["model_path"] = str(self.model_path)
        data["checkpoint_path"] = str(self.checkpoint_path)
        return data


def retrieval_recall(
    image_vecs: np.ndarray, text_vecs: np.ndarray, ks: Sequence[int] = (1, 10), targets: np.ndarray | None = None
) -> dict[str, float]:
    """Image→text recall@k: the share of images whose true text (row `targets[i]`, default `i`) ranks in the top k.

    The rank is 1 + the number of texts scoring strictly higher, so ties count in the image's favour.
    """
    targets = np.arange(len(image_vecs)) if targets is None else np.asarray(targets)
    ranks = np.empty(len(image_vecs), np.int64)
    for start in range(0, len(image_vecs), 1024):
        scores = image_vecs[start : start + 1024] @ text_vecs.T
        true = scores[np.arange(len(scores)), targets[start : start + 1024]]
        ranks[start : start + 1024] = (scores > true[:, None]).sum(axis=1)
    return {f"recall@{k}": float((ranks < k).mean()) if len(ranks) else float("nan") for k in ks}


def held_out_recall(encoder: ImageEncoder, pairs: Sequence[Pair]) -> dict[str, float]:
    """recall@1/@10 of each held-out image against the distinct held-out titles (duplicates merged)."""
    titles = sorted({title for _, title in pairs})
    index = {title: i for i, title in enumerate(titles)}
    image_vecs = encoder.encode([image for image, _ in pairs])
    text_vecs = encoder.encode_text(titles)
    return retrieval_recall(image_vecs, text_vecs, (1, 10), np.array([index[title] for _, title in pairs]))


class PairDataset(Dataset):
    """(augmented image tensor, token ids) for each (image source, title) pair."""

    def __init__(self, pairs: Sequence[Pair], transform: ImageTransform, tokenizer: Any) -> None:
        self.pairs = pairs
        self.transform = transform
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, title = self.pairs[index]
        return self.transform(open_image(image, index)), self.tokenizer([title])[0]


def fashion_pairs(data_dir: Path, limit: int | None = None) -> Iterator[tuple[str, bytes, str]]:
    """(product id, JPEG bytes, title) of the fashion data set, read straight from its zip (stored, not deflated)."""
    with zipfile.ZipFile(data_dir / "fashion-images.zip") as archive, (data_dir / "products.csv").open(
        newline="", encoding="utf-8"
    ) as handle:
        members = set(archive.namelist())
        count = 0
        for row in csv.DictReader(handle):
            name = f"images/{row['id']}.jpg"
            title = (row.get("productDisplayName") or "").strip()
            if name not in members or not title:
                continue
            yield row["id"], archive.read(name), title
            count += 1
            if limit is not None and count >= limit:
                return


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save through `atomic_write`: a crash never leaves half a checkpoint."""
    with atomic_write(path) as fh:
        torch.save(obj, fh)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups as in CLIP: no weight decay on gains, biases, embeddings of rank < 2 and the temperature."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "logit_scale" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warmup over the first 10 % of steps (at most 500), then cosine decay to zero."""
    warmup = max(1, min(500, total_steps // 10))
    return torch.optim.lr_scheduler.SequentialLR(
        optimizer,
        [
            torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=warmup),
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup)),
        ],
        milestones=[warmup],
    )


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """bf16 where the GPU has it, else fp16; None (fp32) on CPU or when `amp` is off."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def model_file(clip: LoadedClip, metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """What ImageEncoder needs: weights, the config to rebuild the architecture, preprocessing, metrics."""
    return {
        "model_name": clip.model_name,
        "model_cfg": clip.model_cfg,
        "preprocess_cfg": open_clip.get_model_preprocess_cfg(clip.model),
        "state_dict": {key: value.detach().cpu() for key, value in clip.model.state_dict().items()},
        "metrics": metrics,
    }


def training_state(
    clip: LoadedClip,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    step: int,
    history: list[dict[str, Any]],
    losses: list[float],
) -> dict[str, Any]:
    """Everything a resumed run needs to continue exactly where this one stopped."""
    state = model_file(clip, history) | {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "step": step,
        "losses": losses,
    }
    if clip.device.type == "cuda":
        state["rng_cuda"] = torch.cuda.get_rng_state(clip.device)
    return state


def restore_training_state(
    path: Path,
    clip: LoadedClip,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> tuple[int, list[dict[str, Any]], list[float]]:
    """Load a `training_state` file into the live objects; returns (step, epoch history, losses)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["model_name"] != clip.model_name or state["model_cfg"] != clip.model_cfg:
        raise Conflict(f"{path} is a {state['model_name']} checkpoint, not {clip.model_name}: use another out_dir")
    clip.model.load_state_dict(state["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng_cpu"])
    if clip.device.type == "cuda" and "rng_cuda" in state:
        torch.cuda.set_rng_state(state["rng_cuda"], clip.device)
    return state["step"], state["metrics"], state["losses"]


def train_clip(
    pairs_train: Sequence[Pair],
    pairs_val: Sequence[Pair],
    out_dir: Path,
    model_name: str,
    checkpoint: str | None,
    epochs: int,
    batch_size: int,
    lr: float,
    device: str = "auto",
    resume: bool = True,
    max_steps: int | None = None,
    seed: int = 0,
    *,
    weight_decay: float = 0.1,
    amp: bool = True,
    num_workers: int = 0,
    time_budget_s: float | None = None,
    console: Console | None = None,
) -> TrainReport:
    """Train `model_name` (from `checkpoint`, or from scratch when None) on the pairs; see the module doc.

    `max_steps` caps the optimizer steps of the whole run (a later call with a larger cap resumes); the
    learning-rate schedule always spans `epochs`, so a capped run followed by a resume equals one run.
    `time_budget_s` likewise stops early (evaluated, saved, resumable) once that much wall time is spent.
    """
    if not pairs_train:
        raise BadInput("no training pairs")
    out_dir.mkdir(parents=True, exist_ok=True)
    console = console or Console(stderr=True)
    torch_device = as_torch_device(device)
    torch.manual_seed(seed)
    clip = load_clip(model_name, checkpoint, torch_device, seed)
    model = clip.model
    preprocess = open_clip.get_model_preprocess_cfg(model)
    size = preprocess["size"] if isinstance(preprocess["size"], int) else preprocess["size"][0]
    dataset = PairDataset(pairs_train, train_transform(size, preprocess["mean"], preprocess["std"]), clip.tokenizer)
    batch = min(batch_size, len(pairs_train))
    steps_per_epoch = len(pairs_train) // batch
    total_steps = epochs * steps_per_epoch
    stop_at = total_steps if max_steps is None else min(total_steps, max_steps)

    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    scheduler = make_scheduler(optimizer, total_steps)
    dtype = amp_dtype(torch_device, amp)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    loss_fn = open_clip.ClipLoss()
    checkpoint_path, model_path = out_dir / "last.pt", out_dir / "model.pt"
    step, history, losses = 0, [], []
    if resume and checkpoint_path.exists():
        step, history, losses = restore_training_state(checkpoint_path, clip, optimizer, scheduler, scaler)
        console.print(f"resuming {model_name} from step {step} of {total_steps} ({checkpoint_path})")
    resumed_from = step
    deadline = time.monotonic() + time_budget_s if time_budget_s is not None else math.inf
    encoder = ImageEncoder.from_clip(clip, batch_size=max(batch, 256))

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"train-clip {model_name}", total=stop_at, completed=min(step, stop_at), loss=float("nan"))
        while step < stop_at:
            epoch, done = divmod(step, steps_per_epoch)
            started, first_step = time.perf_counter(), step
            # The epoch's own generator orders it and seeds the loader, so resuming mid-epoch replays the
            # same batches; the global RNG (restored on resume) then only drives the augmentations.
            generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
            order = torch.randperm(len(pairs_train), generator=generator)[done * batch :].tolist()
            loader = DataLoader(dataset, batch_size=batch, sampler=order, drop_last=True, generator=generator,
                                num_workers=num_workers, pin_memory=torch_device.type == "cuda")
            model.train()
            for images, tokens in loader:
                with autocast(torch_device, dtype):
                    out = model(images.to(torch_device, non_blocking=True), tokens.to(torch_device, non_blocking=True))
                    loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
                step += 1
                losses.append(loss.item())
                progress.update(task, advance=1, loss=losses[-1], description=f"epoch {epoch + 1}/{epochs}")
                if step >= stop_at or time.monotonic() > deadline:
                    break
            model.eval()
            recall = held_out_recall(encoder, pairs_val) if pairs_val else {}
            stats = EpochStats(epoch + 1, step, float(np.mean(losses[first_step:step])), recall.get("recall@1"),
                               recall.get("recall@10"), round(time.perf_counter() - started, 1))
            history.append(asdict(stats))
            save_atomic(training_state(clip, optimizer, scheduler, scaler, step, history, losses), checkpoint_path)
            save_atomic(model_file(clip, history), model_path)
            progress.console.print(
                f"epoch {stats.epoch} step {step}: loss {stats.train_loss:.4f}, "
                f"held-out image→title recall@1 {stats.recall_at_1}, recall@10 {stats.recall_at_10}"
            )
            if time.monotonic() > deadline:
                progress.console.print(f"time budget of {time_budget_s:.0f} s spent at step {step}: resume to go on")
                break
    if not model_path.exists():
        save_atomic(model_file(clip, history), model_path)
    return TrainReport(
        model_name=model_name,
        model_id=checkpoint_model_id(model_name, model_path),
        model_path=model_path,
        checkpoint_path=checkpoint_path,
        device=str(torch_device),
        n_train=len(pairs_train),
        n_val=len(pairs_val),
        n_val_titles=len({title for _, title in pairs_val}),
        steps=step,
        resumed_from_step=resumed_from,
        epochs=[EpochStats(**entry) for entry in history],
        losses=losses,
    )
