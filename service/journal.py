"""Write intent log: the ids a write is about to change, on disk before the store is touched.

A write changes the store, then the search index, each atomically on its own. A crash between the two
leaves the file behind; the next start re-syncs exactly those ids from the store, so the index never
keeps a product the store lost, nor misses one the store has.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(ids, fh, ensure_ascii=False)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
