"""Stage: a file of corrections → the store. A correction sets a product's values in one family; it is
never overwritten by the model and is a training label from then on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shoptag.catalog.feedback import read_corrections
from shoptag.catalog.records import Reject
from shoptag.catalog.rejects import write_rejects
from shoptag.store.records import Store


@dataclass
class FeedbackReport:
    applied: int = 0
    rejected: int = 0
    product_ids: list[str] = field(default_factory=list)
    rejects_file: str | None = None


def apply_feedback(store: Store, path: Path, rejects_path: Path) -> FeedbackReport:
    corrections, rejects = read_corrections(path)
    items = [(line, c.id, c.family, c.values) for line, c in corrections]
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
