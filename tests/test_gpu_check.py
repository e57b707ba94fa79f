"""`bench/gpu_check.sh --device cpu`: the GPU check's dry run goes through every step at small sizes and prints
its table, so the script is known to work before it first meets a CUDA machine (no timing is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_dry_run_on_cpu_prints_a_figure_for_every_step(data_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "SHOPTAG_DATA_DIR": str(data_dir)}
    run = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--device", "cpu"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in run.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert [c.strip() for c in rows[0]] == ["step", "figure", "value", "unit", "device", "n"]
    figures = {(c[0].strip(), c[3].strip()): float(c[2].replace(",", "")) for c in rows[1:]}
    for step, unit in (("encode", "products/s"), ("encode", "images/s"), ("knn", "products tagged/s"),
                       ("clip-train", "pairs/s")):
        assert figures.get((step, unit), 0) > 0, f"no {unit} figure for {step}:\n{run.stdout}"
    assert all(row[4].strip() == "cpu" for row in rows[1:])


def test_an_unknown_device_is_refused(tmp_path: Path) -> None:
    run = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--device", "tpu"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "--device must be cuda or cpu" in run.stderr
