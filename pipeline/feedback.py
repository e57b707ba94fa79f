"""Stage: a file of corrections → the store. A correction sets a product's values in one family; it is
never overwritten by the model and is a training label from then on. A value no product holds yet in its family
is taken (corrections are how a family gains a value), and the report names each such value, so a typo
(`Navy blue` beside `Navy Blue`) shows at once rather than as a new tag after the next training."""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from shoptag.catalog.feedback import read_corrections
from shoptag.catalog.records import Reject
from shoptag.catalog.rejects import write_rejects
from shoptag.core.errors import UnknownFamily
from shoptag.store.records import Store


@dataclass
class FeedbackReport:
    applied: int = 0
    rejected: int = 0
    product_ids: list[str] = field(default_factory=list)
    rejects_file: str | None = None
    new_values: list[str] = field(default_factory=list)  # `family=value` no product held before this file


def apply_feedback(store: Store, path: Path, rejects_dir: Path, families: Set[str]) -> FeedbackReport:
    """Apply the corrections of `path`; a line naming an unknown product, or a family outside `families` (the
    closest one named: most often a typo), is a reject in `rejects_dir`. A workspace that knows no family yet
    takes any: those corrections are its first labels."""
    corrections, rejects = read_corrections(path)
    items = [(line, c.id, c.family, c.values) for line, c in corrections]
    known = []
    for line, pid, family, values in items:
        if not store.has_product(pid):
            rejects.append(Reject(line, pid, f"unknown product id {pid!r}", f"{family}={values}"))
        elif families and family not in families:
            rejects.append(Reject(line, pid, str(UnknownFamily(family, families)), f"{family}={values}"))
        else:
            known.append((line, pid, family, values))
    report = FeedbackReport(new_values=_new_values(store, [(family, values) for _, _, family, values in known]))
    report.applied = store.add_feedback([(pid, family, values) for _, pid, family, values in known], origin=str(path))
    report.product_ids = sorted({pid for _, pid, _, _ in known})
    report.rejected = len(rejects)
    if rejects:
        rejects_path = rejects_dir / f"feedback-{datetime.now():%Y%m%d-%H%M%S-%f}.jsonl"
        rejects_path.parent.mkdir(parents=True, exist_ok=True)
        write_rejects(sorted(rejects, key=lambda r: r.line or 0), rejects_path)
        report.rejects_file = str(rejects_path)
    return report


def _new_values(store: Store, corrections: list[tuple[str, list[str]]]) -> list[str]:
    """`family=value` for each value of `corrections` that no product holds in that family yet."""
    held = {family: store.values_of(family) for family in {family for family, _ in corrections}}
    return sorted({f"{family}={v}" for family, values in corrections for v in values if v not in held[family]})
