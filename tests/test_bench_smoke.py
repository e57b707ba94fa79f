"""The speed benchmark harness runs end to end and writes the figures it promises (no timing is asserted:
the numbers depend on the machine and its load)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURE_KEYS = {"benchmark", "figure", "value", "unit", "device", "n", "machine", "load_1m"}


def test_quick_scaling_run_writes_positive_figures(tmp_path: Path) -> None:
    results = tmp_path / "results"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", "scaling", "--max-scale", "2000",
         "--work", str(tmp_path / "work"), "--results", str(results)],
        check=True, cwd=ROOT, timeout=300,
    )
    summary = json.loads((results / "speed.json").read_text())
    (run,) = summary["runs"]
    assert run["rc"] == 0 and run["peak_rss_mb"] > 0
    load = [run["load_1m_start"], run["load_1m_end"]]  # the machine's load, measured around the job's process
    figures = {f["figure"]: f for f in summary["figures"]}
    for name in ("index build", "kNN tagging", "kNN search k=20, batch of 100 p99", "similar (single query k=20) p50",
                 "peak RSS"):
        assert FIGURE_KEYS <= figures[name].keys()
        assert figures[name]["value"] > 0 and figures[name]["n"] == 2000
        assert figures[name]["load_1m"] == load  # every figure says what load it was measured under
    assert figures["index build"]["extra"]["factory"] == "Flat"
    table = (results / "speed.md").read_text()
    assert "| benchmark | figure | value | unit | device | machine | n | load 1m |" in table
    (row,) = [line for line in table.splitlines() if "kNN tagging [Flat]" in line]
    assert row.endswith(f"| {load[0]:.1f} → {load[1]:.1f} |")
