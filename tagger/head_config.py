"""How the classifier head trains: its own module, free of torch, so settings and fitting code can name it
without loading torch (the head module loads it; training fits the lexical sources before that)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HeadConfig:
    hidden: int = 0  # 0: linear; otherwise one hidden layer
    epochs: int = 60
    patience: int = 6
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 512
    # class weight ∝ (1 / frequency) ** power: 0 ignores the imbalance, 1 fully balances it; in between
    # lifts the long tail without giving up the precision of frequent tags
    class_weight_power: float = 0.5
    seed: int = 13
