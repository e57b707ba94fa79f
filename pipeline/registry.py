"""The models kept in the workspace: which one is current, which were promoted before it, which were kept aside
by the guard and why. `promote` and `rollback` are each one atomic switch of the `current` pointer; people's
tags are never touched (the model only writes families nobody tagged), and `shoptag tag` re-tags the rest."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from shoptag.core.errors import Conflict
from shoptag.core.files import atomic_write
from shoptag.tagger.model import current_name, set_current

HISTORY = "history.json"  # [{"model" made current, "action": train|promote|rollback, "at"}], oldest first
GUARD = "guard.json"  # in a model's folder: the guard's verdict on it


@dataclass
class ModelEntry:
    name: str
    created_at: float
    labelled: int | None
    families: int
    status: str  # current | previous | rolled back | kept aside | trained
    guard: dict | None


def history(models_dir: Path) -> list[dict]:
    path = models_dir / HISTORY
    return json.loads(path.read_text()) if path.is_file() else []


def record(models_dir: Path, name: str, action: str) -> None:
    """Append to the history (rewritten atomically: it is small)."""
    entries = [*history(models_dir), {"model": name, "action": action, "at": time.time()}]
    with atomic_write(models_dir / HISTORY, "w", encoding="utf-8") as fh:
        json.dump(entries, fh, indent=1)


def remember_current(models_dir: Path) -> None:
    """Before the first recorded switch: note the model current so far, so a rollback can return to it."""
    current = current_name(models_dir)
    if current is not None and not history(models_dir):
        record(models_dir, current, "train")


def write_guard(folder: Path, verdict: dict) -> None:
    with atomic_write(folder / GUARD, "w", encoding="utf-8") as fh:
        json.dump(verdict, fh, indent=1, ensure_ascii=False)


def _stack(models_dir: Path) -> list[str]:
    """The models made current, oldest first, less those a rollback left: a rollback pops one."""
    stack: list[str] = []
    for entry in history(models_dir):
        if entry["action"] == "rollback":
            stack = stack[:-1]
        else:
            stack.append(entry["model"])
    current = current_name(models_dir)
    if current is not None and (not stack or stack[-1] != current):  # made current before there was a history
        stack.append(current)
    return stack


def list_models(models_dir: Path) -> list[ModelEntry]:
    """Every complete model folder, newest first."""
    current = current_name(models_dir)
    stack = _stack(models_dir)
    ever = {e["model"] for e in history(models_dir)}
    entries = []
    for folder in models_dir.glob("tagger-*"):
        meta_path = folder / "model.json"
        if folder.suffix == ".tmp" or not meta_path.is_file():
            continue
        meta = json.loads(meta_path.read_text())
        guard = json.loads((folder / GUARD).read_text()) if (folder / GUARD).is_file() else None
        if folder.name == current:
            status = "current"
        elif folder.name in stack:
            status = "previous"  # where a rollback goes
        elif folder.name in ever:
            status = "rolled back"
        elif guard is not None and not guard["promoted"]:
            status = "kept aside"
        else:
            status = "trained"
        entries.append(ModelEntry(folder.name, meta["created_at"], meta.get("labelled"), len(meta["families"]),
                                  status, guard))
    return sorted(entries, key=lambda e: -e.created_at)


def promote(models_dir: Path, name: str) -> str:
    """Make `name` the current model (e.g. one the guard kept aside, after a person looked at why)."""
    set_current(models_dir, name)
    record(models_dir, name, "promote")
    return name


def rollback(models_dir: Path) -> str:
    """Switch back to the model that was current before the current one."""
    stack = _stack(models_dir)
    if len(stack) < 2:
        raise Conflict(f"no earlier model to roll back to in {models_dir}")
    set_current(models_dir, stack[-2])
    record(models_dir, stack[-2], "rollback")
    return stack[-2]
