"""The evaluation report a person would rather read: methods side by side per tag family, as Markdown,
HTML and matplotlib PNGs (reliability diagrams, per-class F1 against class frequency for the long tail).

Input is a `Results` mapping: dataset -> tag family -> method (e.g. ``tfidf-lr``, ``knn``, ``head``,
``fused``, ``zero-shot-clip``) -> `MethodResult`. Metric keys are those of `shoptag.tagger.metrics`
plus the ones in `COLUMNS` (``coverage_at_target`` / ``precision_at_target`` at the target precision,
``ece``, ``fit_seconds``); a column is shown when any method of the family has it.

`write_report` also takes plain dicts: a method as a flat metrics dict (with optional ``reliability`` as
bin_conf/bin_acc/bin_count or confidence/accuracy/count), a family as ``{"methods": {...}}`` and a dataset
as ``{"families": {...}}``, the shape `shoptag.pipeline.evaluate.evaluate` returns.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


@dataclass
class MethodResult:
    """One method's scores on one family: metrics, and optionally calibration and long-tail data."""

    metrics: dict[str, float]
    reliability: dict[str, list[float]] | None = None  # bin_conf, bin_acc, bin_count (metrics.reliability_curve)
    per_class_f1: list[float] | None = None
    class_frequency: list[int] | None = None  # training examples per class, aligned with per_class_f1
    buckets: list[dict] | None = None  # metrics.frequency_buckets: macro scores by class frequency
    notes: list[str] = field(default_factory=list)


Results = Mapping[str, Mapping[str, Mapping[str, MethodResult]]]

# (metric key, column header, which way is better: "high", "low" or None for no "best")
COLUMNS: tuple[tuple[str, str, str | None], ...] = (
    ("accuracy", "accuracy", "high"),
    ("f1_weighted", "F1 weighted", "high"),
    ("f1_macro", "F1 macro", "high"),
    ("f1_micro", "F1 micro", "high"),
    ("f1_samples", "F1 samples", "high"),
    ("coverage_at_target", "coverage @target", "high"),
    ("precision_at_target", "precision @target", None),
    ("ece", "ECE", "low"),
    ("fit_seconds", "fit s", None),
)
PRIMARY, SECONDARY = "f1_weighted", "f1_macro"


@dataclass
class Table:
    """Header and rows of cells; a cell is (text, bold). Rendered to Markdown and HTML alike."""

    header: list[str]
    rows: list[list[tuple[str, bool]]]


def _fmt(value: float | None, key: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.1f}" if key == "fit_seconds" else f"{value:.4f}"


def _signed(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.4f}"


def _best(values: Sequence[float | None], better: str | None) -> float | None:
    known = [v for v in values if v is not None and not math.isnan(v)]
    if not known or better is None:
        return None
    return max(known) if better == "high" else min(known)


def family_table(methods: Mapping[str, MethodResult]) -> Table:
    """Methods as rows, the metrics any of them has as columns, the best value of each column in bold."""
    columns = [c for c in COLUMNS if any(c[0] in m.metrics for m in methods.values())]
    rows: list[list[tuple[str, bool]]] = [[(name, False)] for name in methods]
    for key, _, better in columns:
        values = [m.metrics.get(key) for m in methods.values()]
        best = _best(values, better)
        for row, value in zip(rows, values):
            row.append((_fmt(value, key), best is not None and value == best))
    return Table(["method", *(header for _, header, _ in columns)], rows)


def bucket_table(methods: Mapping[str, MethodResult]) -> Table | None:
    """The long tail: per bucket of classes by training examples, its classes and test examples, and each
    method's macro F1 over the classes present (best in bold). None when no method has buckets."""
    with_buckets = {n: m.buckets for n, m in methods.items() if m.buckets}
    if not with_buckets:
        return None
    first = next(iter(with_buckets.values()))
    rows: list[list[tuple[str, bool]]] = []
    for i, bucket in enumerate(first):
        values = [b[i]["f1_macro"] for b in with_buckets.values()]
        values = [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values]
        best = _best(values, "high")
        rows.append([
            (bucket["bucket"], False), (str(bucket["classes"]), False),
            (f"{bucket['classes_present']} / {bucket['support']}", False),
            *[(_fmt(v), best is not None and v == best) for v in values],
        ])
    return Table(["training examples", "classes", "in test (classes / examples)", *with_buckets], rows)


def fused_vs_best_baseline(methods: Mapping[str, MethodResult], fused: str) -> tuple[str, float, float] | None:
    """(best baseline by weighted F1, fused - baseline weighted F1, fused - baseline macro F1), or None
    when there is no fused method or no baseline."""
    baselines = {n: m for n, m in methods.items() if n != fused and PRIMARY in m.metrics}
    if fused not in methods or not baselines:
        return None
    best = max(baselines, key=lambda n: baselines[n].metrics[PRIMARY])
    mine, theirs = methods[fused].metrics, baselines[best].metrics
    nan = float("nan")
    return (
        best,
        mine.get(PRIMARY, nan) - theirs[PRIMARY],
        mine.get(SECONDARY, nan) - theirs.get(SECONDARY, nan),
    )


def summary_table(results: Results, fused: str) -> Table:
    """One row per dataset and family: weighted / macro F1 of every method, and the fused delta."""
    methods = list(dict.fromkeys(name for fams in results.values() for ms in fams.values() for name in ms))
    rows: list[list[tuple[str, bool]]] = []
    for dataset, families in results.items():
        for family, ms in families.items():
            primary = [ms[n].metrics.get(PRIMARY) if n in ms else None for n in methods]
            best = _best(primary, "high")
            row = [(dataset, False), (family, False)]
            for name, value in zip(methods, primary):
                macro = ms[name].metrics.get(SECONDARY) if name in ms else None
                text = "–" if value is None else f"{_fmt(value)} / {_fmt(macro)}"
                row.append((text, value is not None and value == best))
            delta = fused_vs_best_baseline(ms, fused)
            row.append(("–" if delta is None else f"{_signed(delta[1])} / {_signed(delta[2])} vs {delta[0]}", False))
            rows.append(row)
    return Table(["dataset", "family", *methods, f"{fused} − best baseline"], rows)


def to_markdown(table: Table) -> str:
    def cell(text: str, bold: bool) -> str:
        text = text.replace("|", "\\|")
        return f"**{text}**" if bold else text

    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(cell(t, b) for t, b in row) + " |" for row in table.rows]
    return "\n".join(lines)


def to_html(table: Table) -> str:
    def cell(text: str, bold: bool) -> str:
        text = html.escape(text)
        return f"<td><b>{text}</b></td>" if bold else f"<td>{text}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(cell(t, b) for t, b in row) + "</tr>\n" for row in table.rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def _slug(*parts: str) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9]+", "_", p).strip("_").lower() or "x" for p in parts)


def plot_reliability(methods: Mapping[str, MethodResult], fused: str, title: str, out: Path) -> Path | None:
    """Reliability diagram (accuracy against confidence per bin) of every method that has one; the
    fused method drawn heaviest. None when no method has reliability data."""
    curves = {n: m for n, m in methods.items() if m.reliability}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for name, m in curves.items():
        rel = m.reliability or {}
        points = [(c, a) for c, a, n in zip(rel["bin_conf"], rel["bin_acc"], rel["bin_count"]) if n and c is not None]
        ece = m.metrics.get("ece")
        label = name if ece is None else f"{name} (ECE {ece:.3f})"
        ax.plot(*zip(*points), marker="o", linewidth=3 if name == fused else 1.2, label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence of the top tag", ylabel="share correct", title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_long_tail(methods: Mapping[str, MethodResult], title: str, out: Path) -> Path | None:
    """Per-class F1 against training examples per class (log scale) for every method that has it; classes
    without a test example (F1 NaN or None) are left out."""
    tails = {n: m for n, m in methods.items() if m.per_class_f1 and m.class_frequency}
    if not tails:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, m in tails.items():
        pairs = zip(m.class_frequency or [], m.per_class_f1 or [])
        points = [(max(c, 0.8), f) for c, f in pairs if f is not None and not math.isnan(f)]  # NaN: no test example
        ax.scatter(*zip(*points), s=14, alpha=0.6, label=name)
    ax.set_xscale("log")
    ax.set(ylim=(-0.02, 1.02), xlabel="training examples of the class (log)", ylabel="test F1 of the class")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;"
    "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
    "img{max-width:48%;margin-right:1%}"
)


def write_report(
    results: Results | Mapping,
    out_dir: Path,
    *,
    title: str = "shoptag quality report",
    fused: str = "fused",
    notes: Sequence[str] = (),
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the PNGs into `out_dir`; returns their paths by name.

    Sections: notes, a summary (weighted / macro F1 of every method per family, the fused method's delta
    against the best baseline), then per dataset and family the full table and its plots.
    """
    results = normalize_results(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}", *(f"- {n}" for n in notes), "", "## Summary: F1 weighted / F1 macro (best in bold)", ""]
    md.append(to_markdown(summary_table(results, fused)))
    page = [f"<h1>{html.escape(title)}</h1>"]
    page += ["<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"] if notes else []
    page += ["<h2>Summary: F1 weighted / F1 macro (best in bold)</h2>", to_html(summary_table(results, fused))]
    written: dict[str, Path] = {}
    for dataset, families in results.items():
        md += ["", f"## {dataset}"]
        page.append(f"<h2>{html.escape(dataset)}</h2>")
        for family, methods in families.items():
            table = family_table(methods)
            md += ["", f"### {family}", "", to_markdown(table)]
            page += [f"<h3>{html.escape(family)}</h3>", to_html(table)]
            buckets = bucket_table(methods)
            if buckets is not None:
                md += ["", "Macro F1 by class frequency:", "", to_markdown(buckets)]
                page += ["<p>Macro F1 by class frequency:</p>", to_html(buckets)]
            for name, m in methods.items():
                md += [f"- {name}: {n}" for n in m.notes]
                page += [f"<p>{html.escape(name)}: {html.escape(n)}</p>" for n in m.notes]
            slug, name = _slug(dataset, family), f"{dataset} {family}"
            plots = [
                plot_reliability(methods, fused, f"{name}: reliability", out_dir / f"{slug}-reliability.png"),
                plot_long_tail(methods, f"{name}: long tail", out_dir / f"{slug}-long-tail.png"),
            ]
            for png in filter(None, plots):
                written[png.stem] = png
                md += ["", f"![{png.stem}]({png.name})"]
                page.append(f'<img src="{png.name}" alt="{html.escape(png.stem)}">')
    written["report.md"] = out_dir / "report.md"
    written["report.md"].write_text("\n".join(md) + "\n", encoding="utf-8")
    written["report.html"] = out_dir / "report.html"
    written["report.html"].write_text(
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(page) + "\n</body></html>\n",
        encoding="utf-8",
    )
    return written


def results_to_json(results: Results) -> dict:
    """Plain JSON-ready dict (NaN becomes null)."""

    def clean(value: object) -> object:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return {
        d: {f: {n: clean(asdict(m)) for n, m in ms.items()} for f, ms in fams.items()} for d, fams in results.items()
    }


def _method_result(value: MethodResult | Mapping) -> MethodResult:
    """A MethodResult from itself, from its `asdict` form, or from a flat metrics dict."""
    if isinstance(value, MethodResult):
        return value
    if "metrics" in value:
        metrics = {k: float("nan") if v is None else v for k, v in value["metrics"].items()}
        return MethodResult(**{**value, "metrics": metrics})
    rel = value.get("reliability")
    return MethodResult(
        metrics={k: float(v) for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
        reliability={
            "bin_conf": rel.get("bin_conf", rel.get("confidence")),
            "bin_acc": rel.get("bin_acc", rel.get("accuracy")),
            "bin_count": rel.get("bin_count", rel.get("count")),
        }
        if rel
        else None,
        per_class_f1=value.get("per_class_f1"),
        class_frequency=value.get("class_frequency"),
        buckets=value.get("buckets"),
    )


def normalize_results(results: Mapping) -> dict[str, dict[str, dict[str, MethodResult]]]:
    """dataset -> family -> method -> MethodResult from any of the accepted shapes (see the module doc);
    also the inverse of `results_to_json`."""
    out: dict[str, dict[str, dict[str, MethodResult]]] = {}
    for dataset, families in results.items():
        families = families.get("families", families)
        out[dataset] = {
            family: {method: _method_result(r) for method, r in fam.get("methods", fam).items()}
            for family, fam in families.items()
        }
    return out
