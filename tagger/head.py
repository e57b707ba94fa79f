"""The classifier head: a softmax (single-valued family) or sigmoid (multi-valued) layer over product vectors,
trained on the labelled products with class weights for the long tail and early stopping on validation."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .head_config import HeadConfig

SMALL_PROBLEM = 20_000_000  # training rows × dimensions below which one thread is fastest


class TagHead(nn.Module):
    def __init__(self, dim: int, n_classes: int, hidden: int = 0) -> None:
        super().__init__()
        self.dim, self.n_classes, self.hidden = dim, n_classes, hidden
        if hidden:
            self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, n_classes))
        else:
            self.net = nn.Sequential(nn.Dropout(0.05), nn.Linear(dim, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def class_weights(counts: np.ndarray, power: float) -> np.ndarray:
    """Per-class loss weights with mean 1 over the training examples."""
    freq = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    weights = (freq.sum() / freq) ** power
    return (weights / (weights * freq).sum() * freq.sum()).astype(np.float32)


def train_head(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    multilabel: bool,
    config: HeadConfig = HeadConfig(),
) -> tuple[TagHead, dict]:
    """Train on (x_fit, y_fit), keep the epoch with the lowest validation loss (with no validation rows:
    train `config.epochs` and keep the last).

    Single-valued: `y` holds class indices. Multi-valued: `y` is a dense 0/1 (n, C) matrix.
    Returns the model (eval mode) and a small report (best epoch, losses).
    """
    with _threads(1 if len(x_fit) * x_fit.shape[1] < SMALL_PROBLEM else torch.get_num_threads()):
        return _train(x_fit, y_fit, x_val, y_val, n_classes, multilabel, config)


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run with `n` torch threads: a small head trains faster on one thread than on many that wait for
    each other (and far faster when other work shares the cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _train(
    x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, n_classes: int, multilabel: bool,
    config: HeadConfig,
) -> tuple[TagHead, dict]:
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x_fit_t, x_val_t = torch.from_numpy(np.ascontiguousarray(x_fit, np.float32)), torch.from_numpy(
        np.ascontiguousarray(x_val, np.float32)
    )
    if multilabel:
        y_fit_t = torch.from_numpy(np.asarray(y_fit, np.float32))
        y_val_t = torch.from_numpy(np.asarray(y_val, np.float32))
        positives = y_fit_t.sum(0).numpy()
        pos_weight = torch.from_numpy(
            np.clip(((len(y_fit_t) - positives) / np.maximum(positives, 1)) ** config.class_weight_power, 1, 100).astype(
                np.float32
            )
        )
        loss_fn: nn.Module = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        val_loss_fn: nn.Module = nn.BCEWithLogitsLoss()
    else:
        y_fit_t = torch.from_numpy(np.asarray(y_fit, np.int64))
        y_val_t = torch.from_numpy(np.asarray(y_val, np.int64))
        counts = np.bincount(y_fit, minlength=n_classes)
        loss_fn = nn.CrossEntropyLoss(weight=torch.from_numpy(class_weights(counts, config.class_weight_power)))
        val_loss_fn = nn.CrossEntropyLoss()
    model = TagHead(x_fit_t.shape[1], n_classes, config.hidden)
    # small catalogs still get about ten optimiser steps per epoch
    batch_size = min(config.batch_size, max(16, len(x_fit_t) // 10))
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best_loss, best_state, best_epoch, since_best = float("inf"), copy.deepcopy(model.state_dict()), 0, 0
    for epoch in range(config.epochs):
        model.train()
        for batch in torch.randperm(len(x_fit_t), generator=generator).split(batch_size):
            optimiser.zero_grad()
            loss_fn(model(x_fit_t[batch]), y_fit_t[batch]).backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            val_loss = float(val_loss_fn(model(x_val_t), y_val_t)) if len(x_val_t) else 0.0
        if not len(x_val_t):  # nothing to stop on: train the given epochs, keep the last state
            best_state, best_epoch = model.state_dict(), epoch
        elif val_loss < best_loss - 1e-5:
            best_loss, best_state, best_epoch, since_best = val_loss, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            since_best += 1
            if since_best >= config.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return model, {"best_epoch": best_epoch, "val_loss": best_loss, "config": asdict(config)}


def predict_head(model: TagHead, x: np.ndarray, multilabel: bool, batch_size: int = 4096) -> np.ndarray:
    """(n, C) probabilities: softmax for single-valued families, per-tag sigmoid for multi-valued ones."""
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size], np.float32)))
            out.append((torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)).numpy())
    return np.vstack(out) if out else np.zeros((0, model.n_classes), dtype=np.float32)


def head_state(model: TagHead) -> dict:
    """What a saved model needs to rebuild the head."""
    return {"dim": model.dim, "n_classes": model.n_classes, "hidden": model.hidden, "state": model.state_dict()}


def head_from_state(state: dict) -> TagHead:
    model = TagHead(state["dim"], state["n_classes"], state["hidden"])
    model.load_state_dict(state["state"])
    model.eval()
    return model


def save_heads(heads: dict[str, TagHead], path: Path) -> None:
    """Every family's head, as tensors and numbers (`load_heads` reads them without unpickling objects)."""
    torch.save({family: head_state(head) for family, head in heads.items()}, path)


def load_heads(path: Path) -> dict[str, TagHead]:
    """The heads `save_heads` wrote: tensors and numbers only, never a pickle."""
    return {family: head_from_state(state) for family, state in torch.load(path, weights_only=True).items()}
