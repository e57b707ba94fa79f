"""What every speed benchmark module shares: its command line, the figure records it writes, timing helpers and
the fashion data (titles, photos, and the vectors of a workspace built once and reused).

Each `bench_*.py` module is a script run by `bench/run.py` in its own process (so peak memory is per
benchmark); it writes ``{"figures": [...], "notes": [...]}`` to the ``--out`` file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work"
QUICK_PRODUCTS = 500  # fashion products a --quick run uses (the full run uses all 44,446)


@dataclass
class Figure:
    """One measured number: what it measures, its unit, the device it ran on and how many items it covers."""

    benchmark: str
    figure: str
    value: float
    unit: str
    device: str
    n: int
    extra: dict = field(default_factory=dict)


@dataclass
class Output:
    """What a benchmark module hands back to `run.py`."""

    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *args, **kwargs) -> None:
        self.figures.append(Figure(*args, **kwargs))

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({"figures": [asdict(f) for f in self.figures], "notes": self.notes}, indent=1))


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The options `run.py` passes to every module, plus any the module adds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write the figures to")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--work", type=Path, default=WORK, help="scratch folder (git-ignored)")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("SHOPTAG_DATA_DIR", ROOT.parent / "shared" / "data")))
    if extra:
        extra(parser)
    return parser.parse_args()


def machine(device: str) -> str:
    """The machine a figure was measured on, in a few words: CPU model and cores, memory, and the GPU for cuda."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    host = f"{cpu}, {os.cpu_count()} cores, {memory_gb:.0f} GB RAM"
    if device != "cuda":
        return host
    import torch

    return f"{torch.cuda.get_device_name(0)} + {host}"


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    """The q-th percentile of latencies given in seconds, in milliseconds."""
    return float(np.percentile(np.asarray(seconds) * 1000.0, q))


def latencies(call: Callable[[object], object], items: Sequence[object]) -> list[float]:
    """Seconds each `call(item)` took, one item at a time (after one untimed warm-up call)."""
    call(items[0])
    out = []
    for item in items:
        start = time.perf_counter()
        call(item)
        out.append(time.perf_counter() - start)
    return out


def add_latency(output: Output, benchmark: str, name: str, seconds: Sequence[float], device: str, n: int) -> None:
    """p50 and p99 of `seconds` as two figures (n = the collection size searched; samples in `extra`)."""
    for q in (50, 99):
        output.add(benchmark, f"{name} p{q}", percentile_ms(seconds, q), "ms", device, n,
                   {"samples": len(seconds), "mean_ms": statistics.fmean(seconds) * 1000.0})


class Timer:
    """`with Timer() as t: ...` then `t.seconds`."""

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


# ---- fashion data ---------------------------------------------------------------------------------------------
def fashion_titles(data_dir: Path, limit: int) -> list[str]:
    """The first `limit` fashion product titles in file order (real catalog text, not synthetic)."""
    from shoptag.pipeline.datasets import fashion_records

    return [r["title"] for r in fashion_records(data_dir, limit=limit)]


def fashion_photos(data_dir: Path, limit: int) -> Iterator[bytes]:
    """The encoded bytes of the first `limit` fashion JPEGs, read from the zip (decoding is the encoder's job)."""
    with zipfile.ZipFile(data_dir / "fashion" / "fashion-images.zip") as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".jpg"))[:limit]
        for name in names:
            yield archive.read(name)


def catalog_limit(quick: bool) -> int | None:
    """How many fashion products a run uses: all of them, or a few for a smoke run."""
    return QUICK_PRODUCTS if quick else None


def fashion_workspace(work: Path, limit: int | None) -> Path:
    """The workspace of the fashion catalog (first `limit` products, all when None), shared by benchmarks.

    `bench_reindex` rebuilds it from scratch to time that; the others reuse it, so its embedding cache spares
    them encoding the catalog again.
    """
    return work / f"fashion-{limit or 'all'}"


def fashion_catalog_file(work: Path, data_dir: Path, limit: int | None) -> Path:
    """The fashion catalog as JSONL in the scratch folder (written once)."""
    from shoptag.pipeline.datasets import fashion_catalog

    path = work / f"fashion-{limit or 'all'}.jsonl"
    if not path.is_file():
        fashion_catalog(data_dir, path, limit=limit)
    return path


@dataclass
class FashionVectors:
    """The fashion products of a workspace with their fused vectors and catalog tags."""

    ids: list[str]
    texts: list[str]
    vectors: np.ndarray
    tags: list[dict[str, list[str]]]
    attributes: list[dict[str, str]]  # {"year": ...}: the benchmarks declare `year` a numeric attribute
    settings: object
    encoders: object


def fashion_vectors(work: Path, data_dir: Path, limit: int | None, device: str) -> FashionVectors:
    """Real MiniLM vectors of the fashion products, through the pipeline: ingest when the workspace is empty,
    then `encode_products`, which only encodes what the workspace's embedding cache lacks."""
    from shoptag.pipeline.encode import Encoders, encode_products
    from shoptag.pipeline.ingest import ingest
    from shoptag.core.settings import load_settings
    from shoptag.pipeline.workspace import Workspace

    settings = load_settings(workspace=fashion_workspace(work, limit), encoders={"device": device},
                             catalog={"numeric_attributes": ["price", "year"]})
    workspace = Workspace(settings.workspace)
    store = workspace.open_store()
    cache = workspace.open_cache()
    try:
        if store.count_products() == 0:
            ingest(settings, store, fashion_catalog_file(work, data_dir, limit), show_progress=False)
        products = store.products()
        encoders = Encoders(settings.encoders)
        vectors, _ = encode_products(products, encoders, cache, show_progress=False)
        tags = store.effective_tags([p.id for p in products])
    finally:
        cache.close()
        store.close()
    return FashionVectors(
        ids=[p.id for p in products],
        texts=[p.text for p in products],
        vectors=vectors.fused,
        tags=[{family: [v for v, _, _ in values] for family, values in tags.get(p.id, {}).items()} for p in products],
        attributes=[dict(p.attributes) for p in products],
        settings=settings,
        encoders=encoders,
    )


@dataclass
class Measured:
    """A finished child process: exit status, wall seconds, peak RSS of it and its descendants, its stdout."""

    returncode: int
    seconds: float
    peak_rss_mb: float
    stdout: str


def run_measured(command: Sequence[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> Measured:
    """Run `command` to completion; `os.wait4` gives this child's own peak RSS (the largest of the child and
    the descendants it waited for), so each measured process gets its own figure."""
    import subprocess
    import tempfile

    with tempfile.TemporaryFile() as stdout:
        start = time.perf_counter()
        process = subprocess.Popen(list(command), stdout=stdout, env=env, cwd=cwd)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        text = stdout.read().decode(errors="replace")
    return Measured(process.returncode, seconds, usage.ru_maxrss / 1024.0, text)
