"""Faults a later change must keep surviving: `kill -9` of a real `shoptag tag` at several points, a search
folder on a small filesystem that fills up. After either, the next run must leave the store and the search
index holding the same products, each with its current tags."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from shoptag.core.errors import OUTCOMES, Corrupt, NotFound
from shoptag.indexer.backend import SearchBackend
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


@contextmanager
def _opened(settings: Settings, backend: SearchBackend) -> Iterator[tuple[Store, SearchBackend]]:
    """The workspace's store beside `backend`, both closed after."""
    store = Workspace(settings.workspace).open_store()
    try:
        yield store, backend
    finally:
        backend.close()
        store.close()


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
    with _opened(settings, _backend(settings, encoders)) as (store, backend):
        tag(settings, store, encoders, backend, show_progress=False)
        assert_converged(store, backend)
        again = tag(settings, store, encoders, backend, show_progress=False)
        assert again.tagged == 0


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
    with _opened(settings, _backend(settings, encoders)) as (store, backend):
        tag(settings, store, encoders, backend, show_progress=False)
        assert_converged(store, backend)


# ---- damaged files ------------------------------------------------------------------------------------------
CORRUPT = OUTCOMES[Corrupt].exit_code
class _Touch:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _damage(path: Path, how: str, marker: Path) -> None:
    if how == "random-bytes":
        path.write_bytes(os.urandom(max(path.stat().st_size, 4096)))
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "missing":
        path.unlink()
    elif how == "pickled":  # a well-formed .npz whose arrays are pickled objects
        import numpy as np

        with path.open("wb") as fh:
            np.savez(fh, index=np.array([_Touch(marker)], dtype=object), meta=np.array([_Touch(marker)], dtype=object))


@pytest.fixture
def indexed_copy(untagged_copy, trained_sample) -> tuple[Settings, Path]:
    """The sample tagged into the embedded index, its vectors saved as a snapshot (a full reindex)."""
    from shoptag.pipeline.reindex import reindex

    settings, tmp_path = untagged_copy
    encoders = trained_sample[2]
    with _opened(settings, _backend(settings, encoders)) as (store, backend):
        tag(settings, store, encoders, backend, show_progress=False)
        reindex(settings, store, encoders, backend, show_progress=False)
    assert sorted(p.name for p in Workspace(settings.workspace).search_dir.glob("*.faiss"))
    return settings, tmp_path


DAMAGE = [("text", "random-bytes"), ("fused", "truncated"), ("text", "missing"), ("fused", "pickled"),
          ("search.sqlite", "random-bytes")]


@pytest.mark.slow
@pytest.mark.parametrize("target, how", DAMAGE)
def test_a_damaged_search_file_is_named_in_one_line_and_rebuilt_by_reindex(indexed_copy, trained_sample, target, how):
    from shoptag.indexer.backends import open_backend
    from shoptag.pipeline.reindex import reindex

    settings, tmp_path = indexed_copy
    encoders = trained_sample[2]
    ws = Workspace(settings.workspace)
    path = ws.search_dir / target if target.endswith(".sqlite") else max(ws.search_dir.glob(f"{target}.*.faiss"))
    marker = tmp_path / "unpickled"
    _damage(path, how, marker)
    dims = VectorDims(text=encoders.text.dim, image=None, fused=encoders.text.dim)
    with pytest.raises(Corrupt) as damaged:
        open_backend(settings, dims)
    message = str(damaged.value)
    assert str(path) in message and "shoptag reindex" in message and "\n" not in message
    assert not marker.exists(), "a pickle was loaded"
    with _opened(settings, open_backend(settings, dims, set_aside_damaged=True)) as (store, backend):  # as reindex
        reindex(settings, store, encoders, backend, show_progress=False)
        assert_converged(store, backend)
    assert list(ws.root.glob("search.damaged-*")), "the damaged index is kept aside, not deleted"


@pytest.mark.slow
def test_the_cli_names_a_damaged_index_in_one_line_and_reindex_repairs_it(indexed_copy):
    settings, tmp_path = indexed_copy
    ws = Workspace(settings.workspace)
    _damage(max(ws.search_dir.glob("text.*.faiss")), "random-bytes", tmp_path / "unpickled")
    done = _cli(settings, tmp_path, "similar", "sp-001")
    stdout, stderr = done.communicate(timeout=300)
    assert done.returncode == CORRUPT and "Traceback" not in stderr, stderr
    assert "damaged vector index" in stderr and "text." in stderr and "shoptag reindex" in stderr
    for args in (["check"], ["reindex"], ["check"], ["similar", "sp-001", "--json"]):
        done = _cli(settings, tmp_path, *args)
        stdout, stderr = done.communicate(timeout=300)
        if args == ["check"] and not list(ws.root.glob("search.damaged-*")):
            assert done.returncode == CORRUPT and "damaged" in stdout, (stdout, stderr)
        else:
            assert done.returncode == 0, (args, stdout, stderr)
    hits = json.loads(stdout)  # JSON objects, not Python reprs
    assert hits and all(isinstance(h, dict) and h["id"] != "sp-001" for h in hits)
    done = _cli(settings, tmp_path, "similar", "NOPE")
    _, stderr = done.communicate(timeout=300)
    assert done.returncode == OUTCOMES[NotFound].exit_code, stderr
    assert "unknown product id 'NOPE'" in " ".join(stderr.split())


def test_a_damaged_embedding_cache_is_set_aside_and_recomputed(tmp_path):
    import numpy as np
    from shoptag.tagger.embedding_cache import EmbeddingCache

    path = tmp_path / "embeddings.db"
    cache = EmbeddingCache(path)
    cache.put_many("m", ["h"], np.ones((1, 4), dtype=np.float32))
    cache.close()
    path.write_bytes(os.urandom(8192))
    cache = EmbeddingCache(path)
    try:
        assert cache.count() == 0
        cache.put_many("m", ["h"], np.ones((1, 4), dtype=np.float32))
        assert cache.count("m") == 1
    finally:
        cache.close()
    assert len(list(tmp_path.glob("embeddings.db.damaged-*"))) == 1


def test_a_damaged_store_is_one_line_and_a_backup_restores_it(tmp_path):
    from shoptag.cli import app
    from typer.testing import CliRunner

    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(f'{{"id": "p{i}", "title": "product {i}"}}\n' for i in range(5)))
    runner = CliRunner()
    env = {"SHOPTAG_WORKSPACE": str(tmp_path / "ws"), "SHOPTAG_CONFIG": ""}
    cli = lambda *args: runner.invoke(app, list(args), env=env)  # noqa: E731
    assert cli("ingest", str(catalog)).exit_code == 0
    assert cli("backup", str(tmp_path / "backup.db")).exit_code == 0
    assert cli("check").exit_code == 0
    db = tmp_path / "ws" / "shoptag.db"
    db.write_bytes(os.urandom(16384))
    damaged = cli("explain", "p1")
    assert damaged.exit_code == CORRUPT and "Traceback" not in damaged.output
    text = " ".join(damaged.output.split())
    assert str(db) in text and "shoptag restore" in text
    assert cli("check").exit_code == CORRUPT
    restored = cli("restore", str(tmp_path / "backup.db"))
    assert restored.exit_code == 0, restored.output
    assert cli("explain", "p1").exit_code == 0
    assert cli("check").exit_code == 0


def test_no_code_loads_pickles():
    """numpy files load with allow_pickle=False and torch files with weights_only=True, everywhere."""
    root = Path(__file__).resolve().parents[1]
    sources = [p for p in root.rglob("*.py") if ".venv" not in p.parts and "tests" not in p.parts]
    # results travel from our own Ray workers to the driver in memory (Ray moves every object with pickle
    # anyway); no file is ever unpickled there
    in_memory = {"pipeline/ray_engine.py: yield pickle.loads(batch[\"result\"][0])"}
    offenders = [f"{p.relative_to(root)}: {line.strip()}" for p in sources
                 for line in p.read_text(encoding="utf-8").splitlines()
                 if "allow_pickle=True" in line or "weights_only=False" in line or "pickle.load" in line
                 or "joblib.load" in line or ("np.load(" in line and "allow_pickle=False" not in line)]
    assert set(offenders) <= in_memory, offenders


@pytest.mark.slow
def test_a_model_refuses_pickles_and_an_old_format_says_retrain(trained_sample, tmp_path):
    """The lexical source is saved as arrays: a pickle put in its place is damage (never run), and a model
    saved in the format before (joblib pickles) asks for `shoptag train`."""
    import joblib
    from shoptag.tagger.model import ModelFormatError, current_name, load_model

    settings = trained_sample[0]
    models = Workspace(settings.workspace).models_dir
    copy = tmp_path / "models"
    shutil.copytree(models / current_name(models), copy / "m")
    lexical = sorted((copy / "m").glob("lexical-*.npz"))
    assert lexical and not list((copy / "m").glob("*.joblib")), "the lexical source is saved as arrays"
    assert load_model(copy, "m").families
    joblib.dump(_Touch(tmp_path / "ran"), lexical[0])
    with pytest.raises(Corrupt, match=r"pickled \(object\) data"):
        load_model(copy, "m")
    assert not (tmp_path / "ran").exists(), "a pickled file was unpickled"
    meta = json.loads((copy / "m" / "model.json").read_text())
    (copy / "m" / "model.json").write_text(json.dumps({**meta, "format": 2}))
    with pytest.raises(ModelFormatError, match="retrain needed, run `shoptag train`"):
        load_model(copy, "m")


# ---- output that does not mislead --------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_correction_replaces_the_catalog_tag_in_explain_and_over_http(indexed_copy, trained_sample):
    """The corrected value is the accepted one; the catalog's value it overrode shows as replaced, in `explain`
    and `GET /products/{id}` alike. Without an image tower no tag says it came from text+image."""
    from fastapi.testclient import TestClient
    from shoptag.pipeline.explain import explain
    from shoptag.pipeline.ingest import ingest
    from shoptag.service.app import create_app

    settings, tmp_path = indexed_copy
    photo = Path(__file__).resolve().parents[1] / "examples" / "images" / "jeans-navy.jpg"
    catalog = tmp_path / "new.jsonl"
    catalog.write_text(json.dumps({"id": "new-1", "title": "slim jeans", "image": str(photo)}) + "\n")
    store = Workspace(settings.workspace).open_store()
    try:
        ingest(settings, store, catalog, show_progress=False)
        tag(settings, store, trained_sample[2], None, show_progress=False)
        modalities = {t["evidence"]["modality"] for ts in explain(store, "new-1")["tags"].values() for t in ts}
        assert [t.value for t in store.tags_of("sp-001") if t.family == "colour"] == ["Navy Blue"]
        store.add_feedback([("sp-001", "colour", ["Black"])], origin="test")
        explained = explain(store, "sp-001")
    finally:
        store.close()
    colour = {(t["value"], t["source"], t["status"]) for t in explained["tags"]["colour"]}
    assert colour == {("Black", "feedback", "accepted"), ("Navy Blue", "catalog", "replaced")}
    assert modalities == {"text"}, "a text-only model tagged products with images: their evidence says text"
    with TestClient(create_app(settings)) as client:
        served = client.get("/products/sp-001").json()
    assert {(t["value"], t["source"], t["status"]) for t in served["tags"]["colour"]} == colour


@pytest.mark.slow
def test_an_empty_query_browses_alike_in_the_cli_and_over_http(indexed_copy):
    """An empty query (or one without words) is no text at all: every product that passes the filters, the
    same on the command line and over HTTP (docs/SEARCH.md)."""
    from fastapi.testclient import TestClient
    from shoptag.cli import app
    from shoptag.service.app import create_app
    from typer.testing import CliRunner

    settings, tmp_path = indexed_copy
    env = {"SHOPTAG_WORKSPACE": str(settings.workspace), "SHOPTAG_ENCODERS__TEXT_MODEL": settings.encoders.text_model,
           "SHOPTAG_CONFIG": ""}
    store = Workspace(settings.workspace).open_store()
    try:
        every = sorted(store.product_ids())
    finally:
        store.close()
    with TestClient(create_app(settings)) as client:
        for q in ("", "  ", "!!"):
            cli = CliRunner().invoke(app, ["search", q, "--size", "100", "--json"], env=env)
            assert cli.exit_code == 0, cli.output
            http = client.get("/search", params={"q": q, "size": 100}).json()
            by_cli = json.loads(cli.stdout)["results"]
            assert by_cli["total"] == http["total"] == len(every)
            assert [h["id"] for h in by_cli["hits"]] == [h["id"] for h in http["hits"]]
            assert sorted(h["id"] for h in http["hits"]) == every


def test_a_long_tailed_family_trains_and_reports_the_values_it_could_not_learn(tmp_path):
    """1,500 products, one family with ~1,200 distinct values (most seen once) beside a plain one: training
    finishes, the model saves and loads, and the values it cannot emit are counted in the summary, not dropped
    without a word."""
    import numpy as np
    from shoptag.pipeline.train import not_learnt
    from shoptag.tagger.head_config import HeadConfig
    from shoptag.tagger.model import FitConfig, fit_tagger, load_model, save_model

    n, distinct, colours = 1500, 1200, ["red", "blue", "green", "black", "white"]
    rng = np.random.default_rng(0)
    ids = [f"p{i}" for i in range(n)]
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    vectors[np.arange(n), np.arange(n) % 5] += 3.0
    tags = [{"colour": [colours[i % 5]], "model": [f"m{i % distinct}"]} for i in range(n)]
    fit = np.arange(n) % 7 != 0
    model = fit_tagger(ids, vectors, [f"{t['colour'][0]} shirt" for t in tags], tags, fit, ~fit, {},
                       FitConfig(lexical=False, head=HeadConfig(epochs=2, patience=1)))
    loaded = load_model(tmp_path, save_model(model, tmp_path).name)
    assert len(loaded.families["colour"].vocab) == 5 and len(loaded.families["model"].vocab) > 900
    report = not_learnt(loaded, tags)
    learnt = len(loaded.families["model"].vocab)
    assert set(report) == {"model"} and report["model"]["values"] == distinct - learnt > 0
    assert report["model"]["family_learnt"] and len(report["model"]["examples"]) == 5
