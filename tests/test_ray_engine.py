"""The Ray engine (`--engine ray`) on a local Ray of 2 CPUs: the local engine's tags and scores, a killed run
resumed, a worker killed mid-run, an unreachable cluster.

One Ray is started for the module (a start costs seconds); runs in a subprocess join it by its address. Every
test tags a fresh copy of one trained 500-product fashion workspace whose embedding cache is emptied, so the
workers really encode and a run lasts long enough to be killed in the middle.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray engine's tests need the ray extra (pip install 'shoptag[ray]')")
psutil = pytest.importorskip("psutil")

from fixtures_data import CatalogSlice  # noqa: E402
from shoptag.core.settings import Settings  # noqa: E402
from shoptag.pipeline.encode import Encoders  # noqa: E402
from shoptag.pipeline.ingest import ingest  # noqa: E402
from shoptag.pipeline.ray_cluster import RayOptions  # noqa: E402
from shoptag.pipeline.ray_engine import tag as tag_on_ray  # noqa: E402
from shoptag.pipeline.tag import tag as tag_locally  # noqa: E402
from shoptag.pipeline.train import train  # noqa: E402
from shoptag.pipeline.workspace import Workspace  # noqa: E402
from shoptag.tagger.split import unit_hash  # noqa: E402

PRODUCTS = 500
FAMILIES = ("gender", "masterCategory", "subCategory")  # fewer families, less training in the set-up


@pytest.fixture(scope="module")
def ray_address():
    for attempt in range(3):  # Ray gives its raylet 30 s to register: a machine busy with other work may miss it
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception as exc:
            ray.shutdown()
            if attempt == 2:
                pytest.skip(f"a local Ray could not start on this machine (load {os.getloadavg()[0]:.0f}): {exc}")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def trained(fashion_slice: CatalogSlice, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with 500 fashion products ingested and a model trained; a third of them carry no tags."""
    root = tmp_path_factory.mktemp("ray-trained")
    records = []
    for record in fashion_slice.records[:PRODUCTS]:
        tags = {f: v for f, v in record["tags"].items() if f in FAMILIES}
        records.append({**record, "tags": {} if unit_hash(record["id"], salt="ray") < 0.33 else tags})
    catalog = root / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    settings = Settings(workspace=root / "ws")
    store = Workspace(settings.workspace).open_store()
    try:
        ingest(settings, store, catalog, show_progress=False)
        train(settings, store, Encoders(settings.encoders), show_progress=False)
    finally:
        store.close()
    return settings.workspace


def _copy(trained: Path, to: Path) -> Settings:
    """A fresh copy of the trained workspace, its embedding cache left behind (the run must encode)."""
    shutil.copytree(trained, to, ignore=shutil.ignore_patterns("embeddings.db*"))
    return Settings(workspace=to)


def _tags(workspace: Path) -> list[tuple]:
    """Every tag of the workspace with its status, score and evidence."""
    store = Workspace(workspace).open_store()
    try:
        return store.read("SELECT product_id, family, value, source, status, score, evidence FROM tags "
                          "ORDER BY product_id, family, value, source")
    finally:
        store.close()


ROUNDING = 1e-4 + 1e-6  # evidence numbers are rounded to 4 decimals: a last-bit difference can move one a unit


def _same_ranked(got: list[dict], want: list[dict], key: str, by: str, path: str) -> None:
    """A ranked list of the evidence (neighbours by weight, candidates by score): the same length and, rank by
    rank, the same number to `ROUNDING`; the same entry at each rank, except where two entries' numbers tie to
    `ROUNDING` (their order is the rounding's) or at the last rank of a cut list (its runner-up may tie)."""
    assert len(got) == len(want), f"{path}: {got} != {want}"
    numbers = [w[by] for w in want]
    for rank, (g, w) in enumerate(zip(got, want)):
        _same_evidence({k: v for k, v in g.items() if k != key}, {k: v for k, v in w.items() if k != key},
                       f"{path}[{rank}]")
        if g[key] != w[key]:
            tied = any(abs(numbers[other] - w[by]) <= ROUNDING for other in range(len(want)) if other != rank)
            assert tied or rank == len(want) - 1, f"{path}[{rank}]: {g} != {w}"


def _same_evidence(got, want, path: str = "evidence") -> None:
    """Evidence equal in every key, text and list, and in every number to `ROUNDING`."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), f"{path}: {got} != {want}"
        for k in want:
            _same_evidence(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list) and want and all(isinstance(w, dict) for w in want) and (
            all("weight" in w and "id" in w for w in want) or all("score" in w and "value" in w for w in want)):
        key, by = ("id", "weight") if "weight" in want[0] else ("value", "score")
        _same_ranked(got, want, key, by, path)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{path}: {got} != {want}"
        for i, (g, w) in enumerate(zip(got, want)):
            _same_evidence(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, (int, float)) and abs(got - want) <= ROUNDING, f"{path}: {got} != {want}"
    else:
        assert got == want, f"{path}: {got} != {want}"


def assert_same_tags(got: list[tuple], want: list[tuple]) -> None:
    """Every tag and status equal; scores equal to float32 rounding and evidence to its 4-decimal rounding.
    Ray gives each actor one thread (OMP_NUM_THREADS=1) and encodes in shards, not in the local engine's
    batches of 1,000, so float32 sums run in another order and some scores differ in the last bit (~1e-7); the
    evidence rounds its numbers to 4 decimals, where such a bit can move one by a unit and so reorder two
    neighbours whose weights tie."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g[:5] == w[:5], f"{g[:6]} != {w[:6]}"
        assert abs(g[5] - w[5]) <= 1e-6, f"{g[:6]} != {w[:6]}"
        _same_evidence(*(json.loads(e) if e else e for e in (g[6], w[6])), f"evidence of {g[:3]}")


def _untagged(workspace: Path) -> int:
    store = Workspace(workspace).open_store()
    try:
        return store.read("SELECT count(*) FROM products WHERE tagged_hash IS NULL")[0][0]
    finally:
        store.close()


def _tag(settings: Settings, options: RayOptions | None):
    store = Workspace(settings.workspace).open_store()
    encoders = Encoders(settings.encoders)
    try:
        if options is None:
            return tag_locally(settings, store, encoders, None, show_progress=False)
        return tag_on_ray(settings, store, encoders, None, options, show_progress=False)
    finally:
        store.close()


@pytest.fixture(scope="module")
def local_tags(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> list[tuple]:
    settings = _copy(trained, tmp_path_factory.mktemp("local") / "ws")
    report = _tag(settings, None)
    assert report.tagged == PRODUCTS
    return _tags(settings.workspace)


def test_ray_tags_and_scores_are_the_local_engines(ray_address, trained, local_tags, tmp_path) -> None:
    settings = _copy(trained, tmp_path / "ws")
    report = _tag(settings, RayOptions(workers=2, shard_size=60))
    assert report.tagged == PRODUCTS
    got = _tags(settings.workspace)
    assert sum(1 for t in local_tags if t[3] == "model") > 400, "the model must have plenty to tag"
    assert_same_tags(got, local_tags)
    again = _tag(settings, RayOptions(workers=2, shard_size=60))
    assert (again.tagged, again.skipped_up_to_date) == (0, PRODUCTS)


def _shoptag(*args: str) -> list[str]:
    return [sys.executable, "-c", "from shoptag.cli import main; main()", *args]


def test_a_killed_run_resumes_and_tags_each_product_once(ray_address, trained, local_tags, tmp_path) -> None:
    settings = _copy(trained, tmp_path / "ws")
    command = _shoptag("tag", "--engine", "ray", "--ray-address", ray_address, "--shard-size", "20",
                       "--workspace", str(settings.workspace), "--json")
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 600  # a loaded machine takes minutes to start Ray and write a first shard
    while _untagged(settings.workspace) == PRODUCTS and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.communicate()
    left = _untagged(settings.workspace)
    assert 0 < left < PRODUCTS, f"the kill must land mid-run ({left} of {PRODUCTS} left untagged)"
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert (report["tagged"], report["skipped_up_to_date"]) == (left, PRODUCTS - left)  # each product once
    assert _untagged(settings.workspace) == 0
    assert_same_tags(_tags(settings.workspace), local_tags)


def _kill_a_worker(workspace: Path, killed: list[int]) -> None:
    """Kill -9 one tagging actor's process once the run has written its first shard."""
    deadline = time.monotonic() + 600  # a loaded machine takes minutes to start Ray and write a first shard
    while time.monotonic() < deadline:
        if _untagged(workspace) < PRODUCTS:
            for proc in psutil.process_iter(["pid", "cmdline"]):
                if any("_ShardTagger" in part for part in proc.info["cmdline"] or ()):
                    os.kill(proc.info["pid"], signal.SIGKILL)
                    killed.append(_untagged(workspace))
                    return
        time.sleep(0.05)


def test_a_worker_killed_mid_run_is_replaced_and_every_product_tagged_once(ray_address, trained, local_tags, tmp_path) -> None:
    settings = _copy(trained, tmp_path / "ws")
    killed: list[int] = []
    killer = threading.Thread(target=_kill_a_worker, args=(settings.workspace, killed))
    killer.start()
    report = _tag(settings, RayOptions(workers=2, shard_size=20))
    killer.join()
    assert killed and killed[0] > 0, "a worker must be killed while products were left to tag"
    assert report.tagged == PRODUCTS
    assert _untagged(settings.workspace) == 0
    assert_same_tags(_tags(settings.workspace), local_tags)


def test_an_unreachable_cluster_is_one_line_and_exit_1(trained, tmp_path) -> None:
    settings = _copy(trained, tmp_path / "ws")
    run = subprocess.run(_shoptag("tag", "--engine", "ray", "--ray-address", "127.0.0.1:9",
                                  "--workspace", str(settings.workspace)), capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Ray cluster at 127.0.0.1:9" in lines[0], run.stderr
    assert _untagged(settings.workspace) == PRODUCTS


def test_a_reindex_encoded_on_ray_holds_the_local_reindexs_neighbours(ray_address, trained, tmp_path) -> None:
    from shoptag.pipeline.ray_engine import doc_builder
    from shoptag.pipeline.reindex import reindex
    from shoptag.pipeline.search_sync import open_search

    similar = {}
    for name, builder in (("local", None), ("ray", doc_builder(RayOptions(workers=2, shard_size=150)))):
        settings = _copy(trained, tmp_path / name)
        store, encoders = Workspace(settings.workspace).open_store(), Encoders(settings.encoders)
        backend = open_search(settings, encoders)
        try:
            report = reindex(settings, store, encoders, backend, show_progress=False,
                             **({"builder": builder} if builder else {}))
            assert (report["sent"], report["written"], report["failed"]) == (PRODUCTS, PRODUCTS, [])
            assert backend.count() == PRODUCTS
            similar[name] = [[h.id for h in backend.similar(pid, k=5)] for pid in store.product_ids()[:50]]
        finally:
            backend.close()
            store.close()
    # vectors agree to float32 rounding (one thread per actor), so a near tie may swap two neighbours
    same = sum(r == w for r, w in zip(similar["ray"], similar["local"]))
    assert same >= 45, f"only {same} of 50 products have the same 5 neighbours"
