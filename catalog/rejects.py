"""The rejects file: one JSON line per bad record (line, id, reason, raw), written atomically."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from shoptag.core.files import atomic_write

from .records import Reject


def write_rejects(rejects: Iterable[Reject], path: Path) -> int:
    """Write rejects as JSONL atomically (temp file + rename), so a crash never leaves half a file.

    Returns how many were written.
    """
    count = 0
    with atomic_write(Path(path), "w", encoding="utf-8") as out:
        for reject in rejects:
            out.write(json.dumps(asdict(reject), ensure_ascii=False) + "\n")
            count += 1
    return count
