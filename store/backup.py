"""Backups of the store, the one file that cannot be rebuilt: SQLite's online backup API copies a consistent
state even while another process writes; a restore checks the copy first and replaces the store in one
rename. Everything else in a workspace is derived and rebuilt from the store (`shoptag reindex`)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from shoptag.core.errors import BadInput, Corrupt, NotFound


def integrity(path: Path) -> str:
    """SQLite's own integrity check of the file at `path`: "ok", or what is damaged (one line)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            problems = [row[0] for row in db.execute("PRAGMA integrity_check(20)")]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return "ok" if problems == ["ok"] else "; ".join(problems)


def _copy(source: Path, target: Path) -> None:
    """`source` into a new file `target` (written aside, fsynced, then renamed into place)."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    src, dst = sqlite3.connect(f"file:{source}?mode=ro", uri=True), sqlite3.connect(tmp)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
    finally:
        src.close()
        dst.close()
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, target)


def backup(db_path: Path, dest: Path) -> None:
    """Copy the store to `dest`, a new file."""
    if not db_path.is_file():
        raise NotFound(f"no store at {db_path}")
    if dest.exists():
        raise BadInput(f"{dest} exists: back up to a new file")
    state = integrity(db_path)
    if state != "ok":
        raise Corrupt(f"{db_path}: the store is damaged ({state}); restore an earlier backup instead")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _copy(db_path, dest)


def restore(backup_path: Path, db_path: Path) -> None:
    """Replace the store by `backup_path` after checking it; no process may have the workspace open."""
    if not backup_path.is_file():
        raise NotFound(f"no backup at {backup_path}")
    state = integrity(backup_path)
    if state != "ok":
        raise Corrupt(f"{backup_path}: the backup is damaged ({state}); nothing was restored")
    for suffix in ("-wal", "-shm"):  # the old store's log must not be replayed onto the restored file
        db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
    _copy(backup_path, db_path)
