"""Stage: shopper events (a file, or a batch from the service) → the workspace's append-only event log.

Bad events (unknown type, bad time, an item the catalog does not have, a search without a query) go to a rejects
file with their line and reason; the rest go in. Re-ingesting the same file adds nothing (each event has an
idempotency key). User and session ids are pseudonymised before anything is written, rejects included.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from shoptag.behaviour.event_store import EventStore, content_key, file_origin, own_id_key
from shoptag.behaviour.events import COLUMNS, EventBatch, Reject, read_events, validate
from shoptag.behaviour.privacy import Pseudonymizer, load_or_create_salt
from shoptag.core.errors import BadInput
from shoptag.core.files import atomic_write
from shoptag.core.settings import Settings
from shoptag.store.records import Store

from .workspace import Workspace

APPEND_ROWS = 50_000


@dataclass
class EventsReport:
    read: int = 0
    added: int = 0
    duplicates: int = 0
    rejected: int = 0
    expired: int = 0
    rejects_file: str | None = None
    ignored_columns: list[str] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)  # the first few, for the message

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class EventLog:
    """The workspace's event log and the pseudonymiser of its ids; opened once per process (the service keeps
    it), it is safe to share between threads."""

    store: EventStore
    pseudonym: Pseudonymizer

    def close(self) -> None:
        self.store.close()


def open_event_log(settings: Settings) -> EventLog:
    workspace = Workspace(settings.workspace)
    return EventLog(EventStore(workspace.events_path), Pseudonymizer(load_or_create_salt(workspace.events_salt_path)))


def _pseudonyms(values: list[str | None], pseudonym: Pseudonymizer) -> list[int | None]:
    """A column of raw ids → keyed hashes, hashing each distinct id once."""
    mapping = {v: pseudonym(v) for v in set(values)}
    return [mapping[v] for v in values]


def _rows(batch: EventBatch, pseudonym: Pseudonymizer, origin: int | None) -> list[tuple]:
    """Store rows of a validated batch. Keys: the shop's own event id when given, else (file origin, line) for a
    file, else the content and its occurrence within the batch (`origin` None: an API batch)."""
    users, sessions = _pseudonyms(batch.user, pseudonym), _pseudonyms(batch.session, pseudonym)
    prices = [None if p != p else p for p in batch.price.tolist()]  # NaN → NULL
    columns = (batch.time.tolist(), batch.type.tolist(), users, sessions, batch.item, batch.query,
               batch.quantity.tolist(), prices)
    if origin is not None:  # one pass, no intermediate tuples: this is most of a file's ingest time
        rows = list(zip(itertools.repeat(origin), batch.line.tolist(), *columns))
    else:
        seen: Counter[tuple] = Counter()
        rows = []
        for f in zip(*columns, strict=True):
            rows.append((*content_key(f, seen[f]), *f))
            seen[f] += 1
    for i, own in enumerate(batch.key):
        if own:
            rows[i] = (*own_id_key(own), *rows[i][2:])
    return rows


def _write_rejects(path: Path, rejects: Sequence[Reject]) -> None:
    with atomic_write(path, "w", encoding="utf-8") as handle:
        for r in rejects:
            handle.write(json.dumps({"line": r.line, "item": r.item, "reason": r.reason}, ensure_ascii=False) + "\n")


def _store_batches(settings: Settings, batches, label: str, origin: int | None, report: EventsReport
                   ) -> EventsReport:
    log = open_event_log(settings)
    events, pseudonym = log.store, log.pseudonym
    rejects: list[Reject] = []
    try:
        for batch, bad in batches:
            rejects.extend(bad)
            report.read += len(batch) + len(bad)
            rows = _rows(batch, pseudonym, origin)
            for start in range(0, len(rows), APPEND_ROWS):
                report.added += events.append(rows[start:start + APPEND_ROWS])
        report.expired = events.apply_retention(settings.behaviour.retention_days)
    finally:
        events.close()
    report.rejected = len(rejects)
    report.duplicates = report.read - report.rejected - report.added
    rejects.sort(key=lambda r: r.line)
    report.rejects = [{"line": r.line, "item": r.item, "reason": r.reason} for r in rejects[:10]]
    if rejects:
        path = Workspace(settings.workspace).rejects_dir / f"events-{label}.jsonl"
        _write_rejects(path, rejects)
        report.rejects_file = str(path)
    return report


def ingest_events(settings: Settings, store: Store, path: Path) -> EventsReport:
    """Append the events of a CSV/JSONL/Parquet file; unknown items are rejects (the catalog is the reference)."""
    batches, read_report = read_events(Path(path), set(store.product_ids()))
    report = EventsReport()
    report = _store_batches(settings, batches, Path(path).name, file_origin(Path(path)), report)
    report.ignored_columns = read_report.ignored_columns
    return report


def append_events(settings: Settings, store: Store, records: Sequence[Mapping[str, object]]) -> EventsReport:
    """Append a batch of event records (the HTTP API); `line` in rejects is the 1-based position in the batch.
    An empty batch adds nothing (it has no fields to check)."""
    if not records:
        return EventsReport()
    unknown = sorted({k for r in records for k in r} - set(COLUMNS))
    if unknown:
        raise BadInput(f"unknown event field(s): {', '.join(unknown)} (fields: {', '.join(COLUMNS)})")
    table = pa.table({c: pa.array([None if r.get(c) is None else str(r[c]) for r in records], pa.string())
                      for c in COLUMNS if any(c in r for r in records)})
    for required in ("time", "type"):
        if required not in table.column_names:
            raise BadInput(f"every event needs a {required!r} field")
    lines = np.arange(1, len(records) + 1, dtype=np.int64)
    known = {item for item in {str(r["item"]) for r in records if r.get("item") is not None}
             if store.has_product(item)}
    return _store_batches(settings, [validate(table, lines, known)], "api", None, EventsReport())
