"""Write intent log: the ids a write is about to change, on disk before the store is touched.

A write changes the store, then the search index, each atomically on its own. A crash between the two
leaves the file behind; the next start re-syncs exactly those ids from the store, so the index never
keeps a product the store lost, nor misses one the store has.
"""

from __future__ import annotations

import json
from pathlib import Path

from shoptag.core.files import atomic_write


class WriteJournal:
    """A small JSON file of product ids whose search documents may lag the store."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def pending(self) -> list[str]:
        if not self.path.exists():
            return []
        return json.loads(self.path.read_text(encoding="utf-8"))

    def record(self, ids: list[str]) -> None:
        """Add `ids` to the pending ones, durably (temp file, fsync, rename) before the write starts."""
        ids = list(dict.fromkeys([*self.pending(), *ids]))
        with atomic_write(self.path, "w", encoding="utf-8") as fh:
            json.dump(ids, fh, ensure_ascii=False)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
