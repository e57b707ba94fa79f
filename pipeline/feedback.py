"""Stage: a file of corrections → the store. A correction sets a product's values in one family; it is
never overwritten by the model and is a training label from then on."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from shoptag.catalog.records import Reject
from shoptag.catalog.rejects import write_rejects
from shoptag.store.records import Store


@dataclass
class FeedbackReport:
    applied: int = 0
    rejected: int = 0
    product_ids: list[str] = field(default_factory=list)
    rejects_file: str | None = None


def _values(raw: object) -> list[str]:
    if isinstance(raw, str):
        return [v.strip() for v in raw.split("|") if v.strip()]
    if isinstance(raw, list) and all(isinstance(v, str) for v in raw):
        return [v.strip() for v in raw if v.strip()]
    raise ValueError("`values` must be a string (values separated by |) or a list of strings")


def parse_feedback(path: Path) -> tuple[list[tuple[int, str, str, list[str]]], list[Reject]]:
    """(line, product id, family, values) items and rejects. JSONL lines are objects with `id`, `family`,
    `values` (list, or `|`-separated string; empty = no value applies); CSV has the same columns."""
    items, rejects = [], []
    with path.open(encoding="utf-8", newline="") as fh:
        if path.suffix.lower() == ".csv":
            rows = ((n + 2, row, json.dumps(row, ensure_ascii=False)) for n, row in enumerate(csv.DictReader(fh)))
        else:
            rows = ((n + 1, line, line) for n, line in enumerate(fh) if line.strip())
        for line, row, raw in rows:
            try:
                record = json.loads(row) if isinstance(row, str) else row
                if not isinstance(record, dict):
                    raise ValueError("not an object")
                pid, family = record.get("id"), record.get("family")
                if not isinstance(pid, str | int) or isinstance(pid, bool) or not str(pid).strip():
                    raise ValueError("missing or invalid `id`")
                if not isinstance(family, str) or not family.strip():
                    raise ValueError("missing or invalid `family`")
                items.append((line, str(pid).strip(), family.strip(), _values(record.get("values", []))))
            except (ValueError, json.JSONDecodeError) as exc:
                rejects.append(Reject(line, None, f"bad feedback: {exc}", str(raw)[:2000]))
    return items, rejects


def apply_feedback(store: Store, path: Path, rejects_path: Path) -> FeedbackReport:
    items, rejects = parse_feedback(path)
    known = [i for i in items if store.has_product(i[1])]
    rejects += [Reject(line, pid, f"unknown product id {pid!r}", f"{family}={values}") for line, pid, family, values in items
                if not store.has_product(pid)]
    report = FeedbackReport()
    report.applied = store.add_feedback([(pid, family, values) for _, pid, family, values in known], origin=str(path))
    report.product_ids = sorted({pid for _, pid, _, _ in known})
    report.rejected = len(rejects)
    if rejects:
        rejects_path.parent.mkdir(parents=True, exist_ok=True)
        write_rejects(sorted(rejects, key=lambda r: r.line or 0), rejects_path)
        report.rejects_file = str(rejects_path)
    return report
