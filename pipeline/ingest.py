"""Stage: catalog file → store. Bad records go to the rejects file with their line and reason; the run goes
on. Batches commit with the run's cursor, so an interrupted ingest resumes after the last committed line,
and re-ingesting an unchanged catalog writes nothing (content hashes match)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from shoptag.catalog.readers import read_catalog
from shoptag.catalog.records import Product, Reject
from shoptag.catalog.rejects import write_rejects
from shoptag.core.settings import Settings
from shoptag.store.records import Store, StoredProduct
from shoptag.tagger.language import encoder_warning, has_cjk

from .progress import progress_bar
from .workspace import Workspace

BATCH = 500


@dataclass
class IngestReport:
    run_id: int
    read: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    rejected: int = 0
    resumed_from_line: int = 0
    rejects_file: str | None = None
    changed_ids: list[str] | None = None
    cjk_products: int = 0  # products of this run whose text has CJK characters
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if isinstance(v, int) and k not in ("run_id", "cjk_products")}


def stored(product: Product) -> StoredProduct:
    return StoredProduct(
        product.id, product.title, product.description, dict(product.attributes), product.image,
        product.encoder_text(), product.text_hash, product.image_hash, product.content_hash,
    )


def ingest(settings: Settings, store: Store, catalog: Path, *, show_progress: bool = True) -> IngestReport:
    """Read `catalog` into the store; returns counts and the ids of new or changed products."""
    catalog = Path(catalog).resolve()
    stat = catalog.stat() if catalog.exists() else None
    source = f"{catalog}:{stat.st_size}:{int(stat.st_mtime)}" if stat else str(catalog)
    records = read_catalog(catalog, settings.catalog)  # raises CatalogError for an unreadable file
    run_id, cursor = store.start_run("ingest", source)
    report = IngestReport(run_id, resumed_from_line=cursor)
    for name, value in store.run_counts(run_id).items():  # a resumed run keeps counting where it stopped
        setattr(report, name, value)
    report.resumed_from_line = cursor
    changed_ids: list[str] = []
    batch: list[Product | Reject] = []

    def flush() -> None:
        products = [r for r in batch if isinstance(r, Product)]
        rejects = [r for r in batch if isinstance(r, Reject)]
        known = store.content_hashes([p.id for p in products])
        fresh = [p for p in products if known.get(p.id) != p.content_hash]
        with store.transaction() as db:
            store.upsert_products(db, [stored(p) for p in fresh])
            for p in fresh:
                store.set_catalog_tags(db, p.id, {family: list(values) for family, values in p.tags.items()})
            store.add_rejects(db, run_id, [(r.line, r.product_id, r.reason, r.raw) for r in rejects])
            report.read += len(batch)
            report.new += sum(1 for p in fresh if p.id not in known)
            report.changed += sum(1 for p in fresh if p.id in known)
            report.unchanged += len(products) - len(fresh)
            report.rejected += len(rejects)
            report.cjk_products += sum(has_cjk(p.encoder_text()) for p in products)
            last = max((r.line or 0) for r in batch)
            store.advance_run(db, run_id, last, report.counts())
        changed_ids.extend(p.id for p in fresh)
        batch.clear()

    # an exception leaves the run "running": the next ingest of the same file resumes after `cursor`
    with progress_bar(f"ingest {catalog.name}", None, show_progress) as advance:
        for record in records:
            if record.line is not None and record.line <= cursor:
                continue
            batch.append(record)
            if len(batch) >= BATCH:
                advance(len(batch))
                flush()
        if batch:
            advance(len(batch))
            flush()
    settings.workspace.mkdir(parents=True, exist_ok=True)
    rejects = [Reject(line, pid, reason, raw) for line, pid, reason, raw in store.rejects(run_id)]
    if rejects:
        path = Workspace(settings.workspace).rejects_dir / f"ingest-{run_id}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_rejects(rejects, path)
        report.rejects_file = str(path)
    store.finish_run(run_id, "done", report.counts())
    report.changed_ids = changed_ids
    products = report.new + report.changed + report.unchanged
    warning = encoder_warning(settings.encoders.text_model, report.cjk_products, products)
    if warning:
        report.warnings.append(warning)
    return report
