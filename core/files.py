"""Input files that must exist, and atomic file writes: readers see the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .errors import NotFound


@contextmanager
def atomic_write(path: Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Write to a temp file beside `path`; on success fsync it and rename it over `path` (one atomic step on
    POSIX); on any error remove it and leave `path` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def input_file(path: Path, what: str) -> Path:
    """`path`, when it names a file; `NotFound` in one line otherwise, so every command that reads an input file
    (catalog, corrections, events) answers a missing one alike."""
    path = Path(path)
    if not path.exists():
        raise NotFound(f"{what} not found: {path}")
    return path
