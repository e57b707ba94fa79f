"""Faults a later change must keep surviving: `kill -9` of a real `shoptag tag` at several points, a search
folder on a small filesystem that fills up. After either, the next run must leave the store and the search
index holding the same products, each with its current tags."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from shoptag.indexer.backends import VectorDims
from shoptag.indexer.documents import SearchQuery
from shoptag.indexer.embedded_search import EmbeddedBackend
from shoptag.store.records import Store
from shoptag.core.settings import Settings
from shoptag.pipeline.tag import tag
from shoptag.pipeline.workspace import Workspace


def _copy_db(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite file (the online backup API, WAL included)."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


@pytest.fixture
def untagged_copy(trained_sample, tmp_path) -> tuple[Settings, Path]:
    """A copy of the trained sample workspace with every product still to tag and no search index yet."""
    settings, _, _ = trained_sample
    source = Workspace(settings.workspace)
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    _copy_db(source.db_path, ws.db_path)
    _copy_db(source.cache_path, ws.cache_path)
    shutil.copytree(source.models_dir, ws.models_dir)
    with sqlite3.connect(ws.db_path) as db:
        db.execute("UPDATE products SET tagged_hash = NULL")
        db.execute("DELETE FROM tags WHERE source = 'model'")
    return settings.model_copy(update={"workspace": ws.root}), tmp_path


def _backend(settings: Settings, encoders) -> EmbeddedBackend:
    dim = encoders.text.dim
    return EmbeddedBackend(Workspace(settings.workspace).search_dir, VectorDims(text=dim, image=None, fused=dim))


def _cli(settings: Settings, cwd: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "SHOPTAG_WORKSPACE": str(settings.workspace), "HF_HUB_OFFLINE": "1",
           "SHOPTAG_ENCODERS__TEXT_MODEL": settings.encoders.text_model}
    return subprocess.Popen([sys.executable, "-m", "shoptag.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _count(path: Path, sql: str) -> int:
    """A count read from another process's SQLite file, 0 while the file or table is not there yet."""
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.05) as db:
            return db.execute(sql).fetchone()[0]
    except sqlite3.Error:
        return 0


def _kill_when(process: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"`tag` ended before the kill point: {process.communicate()}"
        assert time.monotonic() < deadline, "the kill point was never reached"
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()


def assert_converged(store: Store, backend: EmbeddedBackend) -> None:
    """Store and search index hold the same products, every product is tagged, and each document carries the
    product's current winning tags (not a document written before the model's tags)."""
    ids = set(store.product_ids())
    assert all(store.tagged_hashes().values()), "a product was left untagged"
    assert backend.count() == len(ids)
    hits = backend.search(SearchQuery(text="", vector=None, size=len(ids) + 10)).hits
    assert {h.id for h in hits} == ids
    winning = store.effective_tags()
    for hit in hits:
        expected = {f: sorted(v for v, _, _ in ts) for f, ts in winning.get(hit.id, {}).items() if ts}
        assert {f: sorted(vs) for f, vs in hit.tags.items()} == expected, hit.id


KILL_POINTS = {
    # the store has committed the batch's tags, the search index has not received them yet
    "store-committed": lambda ws: _count(ws.db_path, "SELECT count(*) FROM products WHERE tagged_hash IS NOT NULL") > 0,
    # the search index has the documents; what the store records about them may not be written
    "search-written": lambda ws: _count(ws.search_dir / "search.sqlite", "SELECT count(*) FROM docs") > 0,
}


@pytest.mark.slow
@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_kill_9_of_tag_then_tag_again_converges(untagged_copy, trained_sample, point):
    settings, tmp_path = untagged_copy
    encoders = trained_sample[2]
    ws = Workspace(settings.workspace)
    _kill_when(_cli(settings, tmp_path, "tag"), lambda: KILL_POINTS[point](ws))
    store = ws.open_store()
    backend = _backend(settings, encoders)
    try:
        tag(settings, store, encoders, backend, show_progress=False)
        assert_converged(store, backend)
        again = tag(settings, store, encoders, backend, show_progress=False)
        assert again.tagged == 0
    finally:
        backend.close()
        store.close()


@pytest.fixture
def small_filesystem(tmp_path) -> Iterator[Callable[[Path], None]]:
    """`mount_at(folder)`: a 2 MB tmpfs mounted on `folder` (root only; skipped otherwise), unmounted after."""
    mounted: list[Path] = []

    def mount_at(folder: Path) -> None:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a small filesystem needs root and mount(8); the disk-full test is skipped")
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the disk-full test is skipped")
        mounted.append(folder)

    yield mount_at
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path, spare: int) -> Path:
    """Fill the filesystem of `folder` with one file up to `spare` free bytes; remove it to free the space."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as fh:
        try:
            while fh.write(b"\0" * 65536):
                pass
        except OSError:
            pass
        fh.truncate(max(fh.tell() - spare, 0))
    return filler


@pytest.mark.slow
def test_a_full_disk_during_tag_is_reported_and_the_next_run_catches_up(untagged_copy, trained_sample,
                                                                        small_filesystem):
    settings, tmp_path = untagged_copy
    encoders = trained_sample[2]
    ws = Workspace(settings.workspace)
    small_filesystem(ws.search_dir)
    _backend(settings, encoders).close()
    # room to open the index, not for the first batch's documents: the store commits, the index write fails
    filler = _fill(ws.search_dir, spare=160_000)
    done = _cli(settings, tmp_path, "tag")
    stdout, stderr = done.communicate(timeout=300)
    assert done.returncode == 1, (stdout, stderr)
    assert "full" in stderr and "Traceback" not in stderr, stderr
    filler.unlink()
    store = ws.open_store()
    backend = _backend(settings, encoders)
    try:
        tag(settings, store, encoders, backend, show_progress=False)
        assert_converged(store, backend)
    finally:
        backend.close()
        store.close()
