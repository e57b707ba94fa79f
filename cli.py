"""The `shoptag` command line: parses arguments, calls a pipeline, prints the result. Nothing else lives here.

Exit codes: 0 done; 3 done, but some input records were rejected (see the rejects file); a failure exits with
the code of its error class in `core.errors.OUTCOMES` (2 bad input, 4 not found, 5 conflict, 6 backend
unavailable, 7 corrupt data, 1 any other failure), and with `--json` prints `{"error": ..., "kind": ...}` on
stdout instead of a message on stderr.
"""

from __future__ import annotations

import functools
import html
import json
import math
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from shoptag.core.errors import OUTCOMES, BadInput, NotFound, ShoptagError, outcome

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

EXIT_OK, EXIT_REJECTS = 0, 3
EXIT_FAILED, EXIT_USAGE = OUTCOMES[ShoptagError].exit_code, OUTCOMES[BadInput].exit_code


class _FirstSentence:
    """In a list of commands, each one's first sentence whole: click cuts it at 45 characters with `...`."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return super().get_short_help_str(limit=300)  # type: ignore[misc]


class _Group(_FirstSentence, TyperGroup):
    """The app and its command groups (`model`)."""


class _Command(_FirstSentence, TyperCommand):
    """Usage lines as click writes them, `ingest [OPTIONS] CATALOG`: typer's `{catalog}` reads as a placeholder
    left unfilled."""

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = (param.metavar or param.name or "").upper() + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
        return pieces


# plain help (rich's has a `<bool>` column for flags and reads `[ray]` as markup); first sentences whole
HELP: dict[str, Any] = {"rich_markup_mode": None, "cls": _Group}
app = typer.Typer(
    name="shoptag",
    help="Tag every product of a catalog with calibrated, explained tags; search and recommend.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    **HELP,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # an error is one line, however long

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file (default: ./shoptag.toml).")]
WorkspaceOpt = Annotated[Path | None, typer.Option("--workspace", "-w", help="Workspace folder (SHOPTAG_WORKSPACE).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
EngineOpt = Annotated[str, typer.Option("--engine", help="local (this process) or ray (Ray Data; pip install 'shoptag[ray]').")]
RayAddressOpt = Annotated[str | None, typer.Option("--ray-address", help="Ray cluster to join (HOST:PORT, ray://HOST:PORT, auto); default: a local Ray on this machine's cores.")]
RayWorkersOpt = Annotated[int | None, typer.Option("--ray-workers", min=1, help="Ray actors (default: one per GPU, else one per CPU).")]
ShardSizeOpt = Annotated[int, typer.Option("--shard-size", min=1, help="Products per Ray shard (the unit of work and of resume).")]


def mapped_errors(run: Callable[..., None]) -> Callable[..., None]:
    """The CLI's one error mapping: a `ShoptagError`, or a failure of the machine (an `OSError` or SQLite's
    `OperationalError`: a full disk, permissions), becomes its message on stderr, or `{"error": ..., "kind": ...}`
    on stdout under `--json`, and the exit code of its row in `core.errors.OUTCOMES`. Anything else is a bug and
    keeps its traceback."""

    @functools.wraps(run)
    def mapped(*args: Any, **kwargs: Any) -> None:
        try:
            run(*args, **kwargs)
        except (ShoptagError, OSError, sqlite3.OperationalError) as exc:
            error = exc if isinstance(exc, ShoptagError) else ShoptagError(str(exc))
            if kwargs.get("as_json"):
                print(json.dumps({"error": str(error), "kind": type(error).__name__}, ensure_ascii=False))
            else:
                err.print(f"[red]error:[/] {escape(str(error))}")
            raise typer.Exit(outcome(error).exit_code) from None

    return mapped


def command(name: str | None = None, *, on: typer.Typer = app) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """`on.command` (the app's, or a command group's) with `mapped_errors`."""
    return lambda run: on.command(name, cls=_Command)(mapped_errors(run))


@contextmanager
def _session(config: Path | None, workspace: Path | None, *, create: bool = False) -> Iterator[tuple[Any, Any]]:
    """Settings and the open store for one command. Only commands that fill a workspace (`create`) may start
    one: elsewhere a missing one is a mistyped or relative path, not a reason to answer from an empty one."""
    from shoptag.core.errors import NotFound
    from shoptag.core.settings import load_settings
    from shoptag.pipeline.workspace import Workspace

    settings = load_settings(config, **({"workspace": workspace} if workspace else {}))
    if not create and not Workspace(settings.workspace).db_path.is_file():
        raise NotFound(f"no workspace at {settings.workspace.resolve()}; run `shoptag ingest` first or pass "
                       "--workspace")
    from shoptag.tagger.segmenter import configure_segmenter

    configure_segmenter(Workspace(settings.workspace).cache_dir)
    store = None
    try:
        store = Workspace(settings.workspace).open_store()
        yield settings, store
    finally:
        if store is not None:
            store.close()


def _check_families(settings: Any, store: Any, families: list[str]) -> None:
    from shoptag.pipeline.tag_system import check_families

    check_families(settings, store.families(), families)


def _plain(value: Any) -> Any:
    """Dataclasses (also inside lists and dicts, e.g. search hits) as dicts, and NaN or infinity (a metric with
    nothing to measure) as null, so `--json` prints strict JSON data, never a repr."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _emit(as_json: bool, data: Any, human: Callable[[], None]) -> None:
    if as_json:
        out.print_json(json.dumps(_plain(data), ensure_ascii=False, default=str, allow_nan=False))
    else:
        human()


def _encoders(settings):
    from shoptag.pipeline.encode import Encoders
    from shoptag.pipeline.workspace import Workspace

    return Encoders(settings.encoders, Workspace(settings.workspace).cache_dir)


def _backend(settings, encoders, *, set_aside_damaged: bool = False, set_aside_other_encoders: bool = False):
    from shoptag.pipeline.search_sync import open_search

    return open_search(settings, encoders, set_aside_damaged=set_aside_damaged,
                       set_aside_other_encoders=set_aside_other_encoders)


def _ray_options(engine: str, address: str | None, workers: int | None, shard_size: int):
    """The Ray engine's options, or None for the local engine."""
    if engine not in ("local", "ray"):
        raise BadInput(f"bad --engine {engine!r}: expected local or ray")
    if engine == "local":
        if address is not None or workers is not None:
            raise BadInput("--ray-address and --ray-workers need --engine ray")
        return None
    from shoptag.pipeline.ray_cluster import RayOptions, check

    options = RayOptions(address, workers, shard_size)
    check(options)
    return options


def _tag_filters(items: list[str] | None) -> dict[str, list[str]]:
    from shoptag.pipeline.search import pairs

    return pairs(items or [], "tag filter", "family")


# ---- tagging ----------------------------------------------------------------------------------------------------
@command()
def ingest(
    catalog: Annotated[Path, typer.Argument(help="Catalog file: .jsonl, .csv, .tsv or .parquet.")],
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Read a catalog into the workspace. Bad records go to a rejects file; the run goes on."""
    from shoptag.core.files import input_file
    from shoptag.pipeline.ingest import ingest as run

    input_file(catalog, "catalog file")  # before a workspace is made for it
    with _session(config, workspace, create=True) as (settings, store):
        report = run(settings, store, catalog, show_progress=not as_json)
        data = {k: v for k, v in asdict(report).items() if k != "changed_ids"}
        for warning in report.warnings:
            err.print(f"[yellow]warning:[/] {warning}")

        def human() -> None:
            out.print(
                f"ingested [bold]{catalog}[/]: {report.read} records, {report.new} new, {report.changed} changed, "
                f"{report.unchanged} unchanged, [{'red' if report.rejected else 'green'}]{report.rejected} rejected[/]"
            )
            if report.resumed_from_line:
                out.print(f"resumed an interrupted run after line {report.resumed_from_line}")
            if report.rejects_file:
                out.print(f"rejects (line, id, reason): {report.rejects_file}")
                rejects = store.rejects(report.run_id)
                for line, pid, reason, _ in rejects[:10]:
                    out.print(f"  line {line} id {pid!r}: {reason}", markup=False, highlight=False)
                if len(rejects) > 10:
                    out.print(f"  … and {len(rejects) - 10} more in the rejects file")

        _emit(as_json, data, human)
        if report.rejected:
            raise typer.Exit(EXIT_REJECTS)


@command()
def train(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    if_better: Annotated[bool, typer.Option("--if-better", help="Hold the test split out, compare with the current "
                                            "model there, and make the new one current only if no family is worse "
                                            "beyond its tolerance (review.tolerance); else keep it aside.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train the tagger on the labelled products (kNN index, heads, fusion weights, calibration)."""
    from shoptag.pipeline.train import train as run
    from shoptag.pipeline.train import train_if_better

    with _session(config, workspace) as (settings, store):
        _, summary = (train_if_better if if_better else run)(settings, store, _encoders(settings),
                                                             show_progress=not as_json)

        def human() -> None:
            table = Table("family", "values", "multi", "fusion weights", "T", "never emitted", title="trained model")
            for family, f in summary["families"].items():
                weights = " ".join(f"{k}={v:g}" for k, v in f["weights"].items() if v)
                table.add_row(family, str(f["values"]), "yes" if f["multilabel"] else "", weights,
                              str(f["temperature"]), str(f["tags_never_emitted"]))
            if summary["families"]:
                out.print(table)
            out.print(f"{summary['labelled']} labelled products; model saved to {summary['model']}")
            if summary.get("review_only"):
                stuck = summary["review_only"]
                tuned = ", ".join(f"{family} (tuned on {n})" for family, n in stuck["families"].items())
                out.print(f"no tag can be accepted yet in {tuned}: {stuck['why']}", markup=False, highlight=False)
            for family, n in summary.get("not_learnt", {}).items():
                out.print(f"not learnt in {family}: {n['values']} values ({n['labels']} labels, e.g. "
                          f"{', '.join(map(repr, n['examples']))}): "
                          + ("too few examples in the training split" if n["family_learnt"] else
                             "the family has too few values to learn") + "; label more to teach them",
                          markup=False, highlight=False)
            guard = summary.get("guard")
            if guard is not None:
                _print_guard(guard)
            if "note" in summary:
                out.print(summary["note"])
            for family, z in summary.get("zero_shot", {}).items():
                out.print(f"zero-shot (needs review): {family}, {z['values']} values: {z['why']}")
            if "taxonomy" in summary:
                out.print(f"taxonomy: {json.dumps(summary['taxonomy'], ensure_ascii=False)}")
            for r in summary.get("rules", []):
                out.print(f"rule line {r['line']}: precision {r['precision']} on {r['fired_on_labelled']} labelled products")

        _emit(as_json, summary, human)


def _print_guard(guard: dict) -> None:
    table = Table("family", "held out", "F1 now", "F1 new", "coverage now", "coverage new",
                  title=f"guard on {guard['held_out']} held-out products")
    for family, f in guard["families"].items():
        cur, cand = f["current"] or {}, f["candidate"] or {}
        cells = [f"{side[m]:.4f}" if m in side else "-" for m in ("f1_weighted", "coverage_at_target")
                 for side in (cur, cand)]
        table.add_row(family, str((cand or cur).get("n", "-")), *cells)
    out.print(table)
    out.print(f"judged: {guard.get('judged', '-')}")
    if guard.get("current_saw_held_out"):
        out.print(f"note: the current model trained on {guard['current_saw_held_out']:.0%} of the held-out products "
                  "(plain `shoptag train`), so its figures are optimistic")
    if guard["promoted"]:
        out.print("[green]promoted:[/] the new model is current (`shoptag tag` re-tags with it)")
    else:
        out.print("[yellow]kept aside:[/] " + "; ".join(guard["reasons"]))


@command()
def tag(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    retag_all: Annotated[bool, typer.Option("--all", help="Retag every product, not only new or changed ones.")] = False,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    ray_workers: RayWorkersOpt = None,
    shard_size: ShardSizeOpt = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Tag every product that is new or changed since it was last tagged, and update search."""
    ray_options = _ray_options(engine, ray_address, ray_workers, shard_size)
    with _session(config, workspace) as (settings, store):
        encoders = _encoders(settings)
        backend = _backend(settings, encoders, set_aside_damaged=True)
        try:
            if ray_options is None:
                from shoptag.pipeline.tag import tag as run

                report = run(settings, store, encoders, backend, retag_all=retag_all, show_progress=not as_json)
            else:
                from shoptag.pipeline.ray_engine import tag as run_on_ray

                report = run_on_ray(settings, store, encoders, backend, ray_options, retag_all=retag_all,
                                    show_progress=not as_json)
        finally:
            backend.close()

        def human() -> None:
            out.print(
                f"tagged {report.tagged} products ({report.skipped_up_to_date} already up to date): "
                f"{report.accepted} tags accepted, {report.review} product families sent to review by this run"
            )
            if report.search_repaired:
                out.print(f"search index: sent {report.search_repaired} product(s) it lacked or held out of date")

        _emit(as_json, report, human)


@command()
def explain(
    product_id: Annotated[str, typer.Argument(help="Product id.")],
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a product's tags and why: scores per source, fusion weights, the neighbours that voted."""
    from shoptag.pipeline.explain import explain as run

    with _session(config, workspace) as (settings, store):
        data = run(store, product_id)

        def human() -> None:
            out.print(f"[bold]{escape(data['id'])}[/] {escape(data['title'])}"
                      + (f"  (image {escape(data['image'])})" if data["image"] else ""))
            for family, tags in data["tags"].items():
                for t in tags:
                    # tags the tag system made carry other evidence (a rule, a path, a zero-shot note): no sources
                    ev = t.get("evidence") or {}
                    mark = {"accepted": "[green]✔[/]", "review": "[yellow]? needs review[/]",
                            "replaced": "[dim]replaced by a correction[/]"}[t["status"]]
                    score = f"{t['score']:.2f}" if t["score"] is not None else "-"
                    kind = t["source"] + (", derived" if "derived_from" in ev else "")
                    out.print(f"  {escape(family):>14}: {escape(t['value'])}  {mark}  score {score}  ({kind})")
                    if t.get("why"):
                        out.print(f"{'':18}{escape(t['why'])}")
                    if ev.get("sources"):
                        sources = ", ".join(f"{k} {v:.2f}" for k, v in ev["sources"].items())
                        out.print(f"{'':18}sources: {sources}" + (f"; {ev['modality']}" if ev.get("modality") else ""))
                    for n in ev.get("neighbours", [])[:3]:
                        out.print(f"{'':18}neighbour {escape(n['id'])} (weight {n['weight']:.2f}) {escape(n['title'])}")
                    if "monthly_share" in ev:
                        out.print(f"{'':18}monthly share of units (Jan–Dec): "
                                  + " ".join(f"{x:.0%}" for x in ev["monthly_share"]))

        _emit(as_json, data, human)


@command()
def feedback(
    file: Annotated[Path, typer.Argument(help="Corrections: JSONL or CSV with id, family, values.")],
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Apply corrections: they become the product's tags, are never overwritten, and train the next model."""
    from shoptag.pipeline.feedback import apply_feedback
    from shoptag.pipeline.search_sync import sync_products
    from shoptag.pipeline.tag_system import known_families
    from shoptag.pipeline.workspace import Workspace

    with _session(config, workspace) as (settings, store):
        report = apply_feedback(store, file, Workspace(settings.workspace).rejects_dir,
                                known_families(settings, store.families()))
        sync_products(settings, store, report.product_ids)
        summary = {k: v for k, v in asdict(report).items() if k != "product_ids"}  # --json stays a summary
        new = report.new_values

        def human() -> None:
            out.print(f"applied {report.applied} corrections, rejected {report.rejected}"
                      + (f" (see {report.rejects_file})" if report.rejects_file else ""))
            if new:  # taken as given: a typo of an existing value shows here, before it trains a tag
                more = f" and {len(new) - 10} more" if len(new) > 10 else ""
                out.print(f"{len(new)} new value(s), held by no product before: {', '.join(new[:10])}{more}",
                          markup=False, highlight=False)

        _emit(as_json, summary, human)
        if report.rejected:
            raise typer.Exit(EXIT_REJECTS)


@command()
def evaluate(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    report_dir: Annotated[Path | None, typer.Option("--report", help="Write report.md/.html and plots here.")] = None,
    modality: Annotated[
        str | None,
        typer.Option(help="Tag from 'text' only, 'image' only or 'text+image' (default: as configured)."),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help='Held-out labels, JSONL {"id", "tags"}: score these products instead of the test split.'),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Held-out evaluation of TF-IDF+LR, kNN-only, head-only, zero-shot CLIP (with an image tower) and fused
    tagging on the grouped split (near-duplicates on one side) or on labels you hold out."""
    from shoptag.pipeline.evaluate import (
        METHOD_ORDER,
        Modality,
        bucket_rows,
        difference_note,
        for_modality,
        precision_note,
        summary_rows,
        unscored_notes,
    )
    from shoptag.pipeline.evaluate import evaluate as run

    if modality not in (None, *get_args(Modality)):
        raise BadInput(f"bad --modality {modality!r}: expected one of {', '.join(get_args(Modality))}")
    with _session(config, workspace) as (settings, store):
        if modality:
            settings = for_modality(settings, modality)  # type: ignore[arg-type]
        results = run(settings, store, _encoders(settings), labels=labels, show_progress=not as_json)
        if modality:
            results["modality"] = modality
        family_notes = [
            precision_note(family, fam, results["precision_confidence"]) for family, fam in results["families"].items()
        ]
        family_notes += filter(None, (difference_note(family, fam) for family, fam in results["families"].items()))
        family_notes += unscored_notes(results)
        groups = results["split_groups"]
        split_note = (
            f"split: {', '.join(f'{name} {n}' for name, n in results['split'].items())} products ({groups['kind']}: "
            f"{groups['groups']} groups, "
            f"{groups['products_in_shared_groups']} products share a group with a near-duplicate)"
        )
        if report_dir:
            from shoptag.pipeline.report import write_report

            write_report({modality or "catalog": results}, report_dir, notes=[split_note, *family_notes])

        def human() -> None:
            out.print(f"{split_note}, target precision {results['target_precision']}")
            for note in family_notes:
                out.print(note)
            for metric in ("f1_weighted", "f1_macro", "coverage_at_target"):
                rows = summary_rows(results["families"], metric)
                methods = sorted({m for _, r in rows for m in r}, key=METHOD_ORDER.index)
                table = Table("family", *methods, title=metric)
                for family, r in rows:
                    best = max(r.values())
                    table.add_row(family, *[
                        (f"[bold]{r[m]:.4f}[/]" if r[m] == best else f"{r[m]:.4f}") if m in r else "-" for m in methods
                    ])
                out.print(table)
            for family, fam in results["families"].items():
                rows = bucket_rows(fam)
                if rows:
                    methods = sorted({m for _, r in rows for m in r}, key=METHOD_ORDER.index)
                    table = Table("training examples", *methods, title=f"{family}: macro F1 by class frequency")
                    for bucket, r in rows:
                        table.add_row(bucket, *[f"{r[m]:.4f}" for m in methods])
                    out.print(table)

        _emit(as_json, results, human)


# ---- search -----------------------------------------------------------------------------------------------------
TagOpt = Annotated[list[str] | None, typer.Option("--tag", "-t", metavar="FAMILY=VALUE", help="Filter family=value (repeatable).")]


@command()
def search(
    query: Annotated[str, typer.Argument(help="Free text, any language.")],
    tag_filter: TagOpt = None,
    attr: Annotated[list[str] | None, typer.Option("--attr", metavar="NAME=VALUE", help="Keyword attribute filter name=value (repeatable).")] = None,
    range_filter: Annotated[list[str] | None, typer.Option("--range", metavar="NAME=MIN:MAX", help="Numeric range name=min:max, e.g. price=10:50 or price=:50 (repeatable).")] = None,
    size: Annotated[int, typer.Option(help="Hits per page.")] = 10,
    page: Annotated[int, typer.Option(help="Page number (from = (page - 1) * size), up to search.max_window hits deep.")] = 1,
    cursor: Annotated[str | None, typer.Option(help="The cursor a previous page printed: the page after it.")] = None,
    sort: Annotated[str, typer.Option(help="relevance, price_asc, price_desc, newest or popularity.")] = "relevance",
    facet: Annotated[list[str] | None, typer.Option(metavar="FAMILY", help="Tag family to count (repeatable).")] = None,
    attr_facet: Annotated[list[str] | None, typer.Option(metavar="NAME", help="Keyword attribute to count (repeatable).")] = None,
    range_facet: Annotated[list[str] | None, typer.Option(metavar="NAME=EDGES", help="Numeric buckets name=edge,edge,... e.g. price=25,50,100 (repeatable).")] = None,
    highlight: Annotated[bool, typer.Option(help="Mark the query's words in titles and descriptions.")] = False,
    diversity: Annotated[str | None, typer.Option(help="Re-rank: mmr[:lambda] or cap:family[:max per value].")] = None,
    query_tags: Annotated[str | None, typer.Option(help="Tagger on the query: boost, suggest or off (default: setting search.query_tags).")] = None,
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hybrid (BM25 + vector) search: filters, facets, sorting, pages, highlights, query understanding."""
    from shoptag.pipeline.search import SearchRequest, query_model, run_search

    if page < 1:
        raise BadInput(f"--page must be 1 or more, got {page}")
    request = SearchRequest(
        text=query, tags=tag_filter or [], attributes=attr or [], ranges=range_filter or [], facets=facet or [],
        attribute_facets=attr_facet or [], range_facets=range_facet or [], size=size, offset=(page - 1) * size,
        cursor=cursor, sort=sort, highlight=highlight, diversity=diversity, query_tags=query_tags,
    )
    with _session(config, workspace) as (settings, store):
        encoders = _encoders(settings)
        backend = _backend(settings, encoders)
        try:
            answer = run_search(request, settings, store, backend, encoders, query_model(settings, encoders))
        finally:
            backend.close()
        results = answer.results

        def human() -> None:
            out.print(f"{'at least ' if results.total_relation == 'gte' else ''}{results.total} matches")
            if answer.hint:
                out.print(answer.hint, markup=False, highlight=False)
            for i, hit in enumerate(results.hits, request.offset + 1):
                # highlights are HTML (`<em>`, entities) for a page; a terminal shows the marks, not `&#x27;`
                title = html.unescape(hit.highlights["title"]) if "title" in hit.highlights else hit.title
                out.print(f"{i:>3}. {hit.id}  {title}  {_ordered_by(sort, hit)}", markup=False, highlight=False)
            for family, counts in {**results.facets, **results.attribute_facets}.items():
                out.print(f"  {family}: " + ", ".join(f"{v} ({c})" for v, c in counts), markup=False, highlight=False)
            for name, buckets in results.range_facets.items():
                out.print(f"  {name}: " + ", ".join(f"{b.key} ({b.count})" for b in buckets))
            for tag in answer.query_tags:
                out.print(f"  query tag {tag.family}={tag.value} ({tag.used_as}: {_query_tag_reason(tag)})",
                          markup=False, highlight=False)
            if results.cursor:
                out.print(f"  next page: --cursor {results.cursor}")

        _emit(as_json, answer, human)


def _query_tag_reason(tag: Any) -> str:
    """Why a query tag was used: the query names it, or its score reached its threshold."""
    threshold = "no threshold" if tag.threshold is None else f"threshold {tag.threshold:.2f}"
    if tag.named:
        return f"named in the query; score {tag.score:.2f}, {threshold}"
    return f"score {tag.score:.2f} >= {threshold}"


def _ordered_by(sort: str, hit: Any) -> str:
    """What a page is ordered by, for the terminal: the score under relevance, else the sort key's value (a
    field sort leaves every score 0, which told a reader nothing)."""
    from datetime import UTC, datetime

    from shoptag.indexer.documents import MISSING_LAST, SORTS

    if SORTS.get(sort) is None or not hit.sort_values:
        return f"{hit.score:.4f}"
    key, value = SORTS[sort][0], hit.sort_values[0]
    if abs(value) >= MISSING_LAST:
        return f"no {key}"
    if key == "listed_at":
        return "listed " + datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{key} {value:g}"


@command()
def similar(
    product_id: Annotated[str, typer.Argument(help="Product id.")],
    k: Annotated[int, typer.Option(min=1, max=1000)] = 10,
    tag_filter: TagOpt = None,
    diversity: Annotated[str | None, typer.Option(help="Re-rank: mmr[:lambda] or cap:family[:max per value].")] = None,
    mode: Annotated[str, typer.Option(help="content (vectors), behaviour (bought together) or blend.")] = "content",
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Products most similar to one product (never itself), optionally within tags, optionally diversified."""
    from shoptag.indexer import storefront
    from shoptag.pipeline import recommend as recs
    from shoptag.pipeline.search import diversity as parse_diversity

    if mode not in get_args(recs.SimilarMode):
        raise BadInput(f"unknown --mode {mode!r}: content, behaviour or blend")
    recs.check_similar_options(mode, bool(tag_filter), bool(diversity))
    with _session(config, workspace) as (settings, store):
        encoders = _encoders(settings)
        if mode != "content":
            log = recs.open_event_log(settings)
            try:
                model = recs.current(settings, store, encoders, log)
            finally:
                log.close()
            found = recs.similar(model, product_id, k, mode, settings.behaviour.blend_behaviour_weight)
            titles = {p.id: p.title for p in store.products([f.id for f in found])}
            rows = [{"id": f.id, "score": f.score, "title": titles.get(f.id, ""), "reason": f.reason} for f in found]

            def human() -> None:
                if not rows:  # a product nobody engaged with alongside others yet: say so, not a blank screen
                    out.print(f"no shopper engaged with {product_id} alongside other products yet; "
                              "--mode blend adds products that look alike", markup=False, highlight=False)
                for i, h in enumerate(rows, 1):
                    out.print(f"{i:>3}. {escape(h['id'])}  {escape(h['title'])}  [dim]{h['score']:.4f} {h['reason']}[/]")

            _emit(as_json, rows, human)
            return
        backend = _backend(settings, encoders)
        try:
            hits = storefront.similar(backend, product_id, k, _tag_filters(tag_filter) or None,
                                      parse_diversity(diversity))
        finally:
            backend.close()
        _emit(as_json, hits, lambda: [out.print(f"{i:>3}. {escape(h.id)}  {escape(h.title)}  [dim]{h.score:.4f}[/]")
                                      for i, h in enumerate(hits, 1)])


@command()
def reindex(
    incremental: Annotated[bool, typer.Option("--incremental", help="Send only products changed since the last reindex.")] = False,
    backend_name: Annotated[str | None, typer.Option("--backend", help="embedded or es (default: from settings).")] = None,
    rollback: Annotated[bool, typer.Option("--rollback", help="Elasticsearch: put the index the last full reindex replaced back live.")] = False,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    ray_workers: RayWorkersOpt = None,
    shard_size: ShardSizeOpt = 1000,
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rebuild the search index from the store with zero downtime (Elasticsearch: new index + alias swap).
    A damaged embedded index is set aside and rebuilt; --incremental also repairs what the index lacks."""
    from shoptag.pipeline.reindex import build_docs, converge
    from shoptag.pipeline.reindex import reindex as run
    from shoptag.pipeline.reindex import rollback as roll_back

    ray_options = _ray_options(engine, ray_address, ray_workers, shard_size)
    builder = build_docs
    if ray_options is not None:
        from shoptag.pipeline.ray_engine import doc_builder

        builder = doc_builder(ray_options)
    if backend_name not in (None, "embedded", "es"):
        err.print(f"[red]bad --backend {backend_name!r}[/]: expected embedded or es")
        raise typer.Exit(EXIT_USAGE)
    with _session(config, workspace) as (settings, store):
        if (backend_name == "es" or rollback) and not settings.es.url:
            raise BadInput("--backend es and --rollback need an Elasticsearch URL (SHOPTAG_ES__URL or [es] url)")
        if rollback:
            was, now = roll_back(settings, store)
            _emit(as_json, {"from": was, "to": now}, lambda: out.print(
                f"{settings.es.index_alias} rolled back from {was} to {now}"))
            return
        if backend_name == "embedded":
            settings = settings.model_copy(update={"es": settings.es.model_copy(update={"url": None})})
        encoders = _encoders(settings)
        backend = _backend(settings, encoders, set_aside_damaged=True, set_aside_other_encoders=True)
        try:
            report = (converge(settings, store, encoders, backend, builder) if incremental
                      else run(settings, store, encoders, backend, show_progress=not as_json, builder=builder))
        finally:
            backend.close()
        _emit(as_json, report, lambda: out.print(
            f"reindexed {report['sent']} products into {backend.name} ({report['written']} written, "
            f"{report['deleted']} deleted, {len(report['failed'])} failed)"
        ))
        if report["failed"]:
            raise typer.Exit(EXIT_FAILED)


# ---- review -------------------------------------------------------------------------------------------------------
@command()
def review(
    family: Annotated[str | None, typer.Option(help="Only this tag family.")] = None,
    tag_value: Annotated[str | None, typer.Option("--tag", help="Only items whose top candidate is this value.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 20,
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The review queue: families the model left "needs review" (and audit draws), most valuable decision first."""
    from shoptag.store.review_log import open_review_log
    from shoptag.pipeline.review import queue, traffic
    from shoptag.pipeline.workspace import Workspace

    with _session(config, workspace) as (settings, store):
        _check_families(settings, store, [family] if family else [])
        items, total = queue(store, open_review_log(store), family=family, tag=tag_value, limit=limit,
                             traffic=traffic(Workspace(settings.workspace)))

        def human() -> None:
            table = Table("product", "family", "candidates", "value", "title", title=f"{total} items to review")
            for i in items:
                cands = ", ".join(f"{c['value']} {c['score']:.2f}" for c in i.candidates[:3])
                cands += "".join(f"; {b['value']}: bought with it {b['share']:.0%}" if b["derived"] == "copurchase"
                                 else f"; {b['value']}: season lift {b['lift']:.1f}" for b in i.behaviour)
                table.add_row(escape(i.product_id), i.family + (" (audit)" if i.kind == "audit" else ""), escape(cands),
                              f"{i.priority:.3f}", escape(i.title[:60]))  # catalog text is never markup
            out.print(table)
            out.print("decide in the web page (`shoptag serve`, /ui/review) or with `shoptag feedback`")

        _emit(as_json, {"total": total, "items": [asdict(i) for i in items]}, human)


@command()
def audit(
    family: Annotated[str, typer.Option(help="Tag family whose auto-accepted tags are checked.")],
    n: Annotated[int, typer.Option("--n", min=1, help="How many to draw into the review queue.")] = 200,
    results: Annotated[bool, typer.Option("--results", help="Only show what earlier audits found.")] = False,
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Draw a stratified sample of auto-accepted tags into the review queue, so people measure their precision;
    shows each audit's measured precision beside the calibrated estimate."""
    from shoptag.store.review_log import open_review_log
    from shoptag.pipeline.review import audit_result, draw_audit

    with _session(config, workspace) as (settings, store):
        _check_families(settings, store, [family])
        log = open_review_log(store)
        drawn = None if results else draw_audit(log, family, n, seed=settings.tagger.seed)
        found = [audit_result(log, a[0]) for a in log.audits() if a[1] == family]

        def human() -> None:
            if drawn:
                out.print(f"drew {drawn['drawn']} of {drawn['population']} auto-accepted {family} tags into the review "
                          f"queue (audit {drawn['audit']}, {len(drawn['strata'])} score strata)")
            if not drawn and not found:
                out.print(f"no audit of {family} yet: `shoptag audit --family {family}` draws one")
            for a in found:
                measured = "not reviewed yet" if a["measured_precision"] is None else (
                    f"{a['measured_precision']:.1%} (95% {a['interval95'][0]:.1%}–{a['interval95'][1]:.1%})")
                out.print(f"audit {a['audit']}: {a['reviewed']}/{a['drawn']} reviewed; precision measured by people "
                          f"{measured}, calibrated estimate {a['calibrated_precision']:.1%}")

        _emit(as_json, {"drawn": drawn, "audits": found}, human)


# ---- models -------------------------------------------------------------------------------------------------------
model_app = typer.Typer(help="The models kept in the workspace: list, promote one, roll back.", no_args_is_help=True,
                        **HELP)
app.add_typer(model_app, name="model")


@command("list", on=model_app)
def model_list(config: ConfigOpt = None, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Every model in the workspace, newest first: which is current, and the guard's verdict on each."""
    from datetime import datetime

    from shoptag.pipeline.registry import list_models
    from shoptag.pipeline.workspace import Workspace

    with _session(config, workspace) as (settings, store):
        models = list_models(Workspace(settings.workspace).models_dir)

        def human() -> None:
            width = max((len(m.name) for m in models), default=5)  # names are typed back: never cut one
            table = Table(Column("model", no_wrap=True, min_width=width), Column("status", no_wrap=True),
                          Column("trained", no_wrap=True), Column("labelled", no_wrap=True, min_width=8),
                          Column("families", no_wrap=True, min_width=8), Column("guard", ratio=1))
            for m in models:
                guard = "-" if m.guard is None else ("passed" if m.guard["promoted"] else "; ".join(m.guard["reasons"]))
                table.add_row(m.name, m.status, datetime.fromtimestamp(m.created_at).strftime("%Y-%m-%d %H:%M:%S"),
                              str(m.labelled or "-"), str(m.families), guard)
            out.print(table)

        _emit(as_json, [asdict(m) for m in models], human)


@command("promote", on=model_app)
def model_promote(
    name: Annotated[str, typer.Argument(help="Model folder name (see `shoptag model list`).")],
    config: ConfigOpt = None, workspace: WorkspaceOpt = None, as_json: JsonOpt = False,
) -> None:
    """Make a model current (one atomic switch); `shoptag tag` then re-tags what no person decided."""
    from shoptag.pipeline.registry import promote
    from shoptag.pipeline.workspace import Workspace

    with _session(config, workspace) as (settings, store):
        current = promote(Workspace(settings.workspace).models_dir, name)
        _emit(as_json, {"current": current}, lambda: out.print(f"current model: {current}"))


@command("rollback", on=model_app)
def model_rollback(config: ConfigOpt = None, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Switch back to the model that was current before (one atomic switch; people's tags are untouched)."""
    from shoptag.pipeline.registry import rollback
    from shoptag.pipeline.workspace import Workspace

    with _session(config, workspace) as (settings, store):
        current = rollback(Workspace(settings.workspace).models_dir)
        _emit(as_json, {"current": current}, lambda: out.print(f"rolled back: current model is {current}"))


# ---- behaviour --------------------------------------------------------------------------------------------------
@command()
def events(
    events_file: Annotated[Path, typer.Argument(help="Events: .csv, .csv.gz, .jsonl or .parquet.")],
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Store shopper events (view, click, cart, purchase, return, search), then rebuild the recommendations,
    each product's popularity (sent to the search index when one exists) and the tags derived from behaviour
    (seasons, co-purchase near misses: "needs review"). Bad lines go to a rejects file; a re-run of the same file
    adds nothing."""
    from shoptag.pipeline import recommend as recs
    from shoptag.pipeline.events import ingest_events
    from shoptag.pipeline.reindex import popularity_to_search

    with _session(config, workspace) as (settings, store):
        report = ingest_events(settings, store, events_file)
        search_sent = None
        if report.added or report.expired:
            encoders = _encoders(settings)
            log = recs.open_event_log(settings)
            try:
                recs.build(settings, store, encoders, log, show_progress=not as_json)
            finally:
                log.close()
            search_sent = popularity_to_search(settings, store, encoders)
        derived = store.tag_counts().get("behaviour:review", 0)

        def human() -> None:
            out.print(f"events from [bold]{events_file}[/]: {report.read} read, {report.added} added, "
                      f"{report.duplicates} already stored, [{'red' if report.rejected else 'green'}]"
                      f"{report.rejected} rejected[/]" + (f", {report.expired} past retention removed"
                                                          if report.expired else ""))
            if search_sent:
                out.print(f"search index: {search_sent} products with a new popularity sent")
            if derived:
                out.print(f"{derived} tags derived from behaviour (seasons, co-purchase near misses) wait in "
                          "`shoptag review`")
            if report.ignored_columns:
                out.print(f"ignored columns: {', '.join(report.ignored_columns)}")
            if report.rejects_file:
                out.print(f"rejects (line, item, reason): {report.rejects_file}")
                for r in report.rejects:
                    item = "" if r["item"] is None else f" item {r['item']!r}"  # a search or a broken line has none
                    out.print(f"  line {r['line']}{item}: {r['reason']}", markup=False, highlight=False)
                if report.rejected > len(report.rejects):
                    out.print(f"  … and {report.rejected - len(report.rejects)} more")

        _emit(as_json, {**report.as_dict(), "search_sent": search_sent, "derived_tags": derived}, human)
        if report.rejected:
            raise typer.Exit(EXIT_REJECTS)


@command()
def recommend(
    user: Annotated[str, typer.Argument(help="The shop's user id.")],
    k: Annotated[int, typer.Option(min=1, max=1000)] = 10,
    context: Annotated[str | None, typer.Option(help="A product the user is looking at (for unknown users).")] = None,
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Personal recommendations from a user's events; an unknown user gets what is popular (around --context)."""
    from shoptag.pipeline import recommend as recs

    with _session(config, workspace) as (settings, store):
        log = recs.open_event_log(settings)
        try:
            model = recs.current(settings, store, _encoders(settings), log)
            items, known = recs.recommend(settings, model, log, user, k, context)
        finally:
            log.close()
        titles = {p.id: p.title for p in store.products([i.id for i in items])}
        rows = [{"id": i.id, "score": i.score, "reason": i.reason, "title": titles.get(i.id, "")} for i in items]

        def human() -> None:
            if not known:
                out.print(f"[dim]no events of {user!r}: popular items{' around ' + context if context else ''}[/]")
            for n, r in enumerate(rows, 1):
                out.print(f"{n:>3}. {escape(r['id'])}  {escape(r['title'])}  [dim]{r['score']:.3f} {r['reason']}[/]")

        _emit(as_json, {"user": user, "known_user": known, "items": rows}, human)


# ---- data, images, service --------------------------------------------------------------------------------------
@command()
def datasets(
    name: Annotated[str, typer.Argument(help="fashion, taobao or behaviour.")],
    out_file: Annotated[Path, typer.Option("--out", help="Catalog file to write (JSONL).")],
    data_dir: Annotated[Path | None, typer.Option(help="Folder of the public data (default ../shared/data).")] = None,
    limit: Annotated[int | None, typer.Option(help="fashion: first N products.")] = None,
    images: Annotated[bool, typer.Option(help="fashion: extract the photos and link them.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Turn a public data set into a shoptag catalog (to reproduce the benchmarks); `behaviour` also names its
    shopper events file (the gift shop's purchase log)."""
    from shoptag.pipeline import datasets as ds

    root = data_dir or ds.default_data_dir()
    if not root.is_dir():
        raise NotFound(f"data folder not found: {root}")
    if name == "fashion":
        path = ds.fashion_catalog(root, out_file, limit=limit, images=images,
                                  image_dir=out_file.parent / "fashion-images" if images else None)
    elif name == "taobao":
        path = ds.taobao_catalog(root, out_file, split="all")
    elif name == "behaviour":
        events_file = ds.behaviour_events(root)
        if not events_file.is_file():
            raise NotFound(f"behaviour events not found: {events_file}")
        path = ds.behaviour_catalog(root, out_file)
        _emit(as_json, {"dataset": name, "catalog": str(path), "events": str(events_file)}, lambda: out.print(
            f"wrote {path}\nevents: {events_file} (then `shoptag ingest {path}` and `shoptag events {events_file}`)"))
        return
    else:
        raise BadInput(f"unknown data set {name!r}: fashion, taobao or behaviour")
    _emit(as_json, {"dataset": name, "catalog": str(path)}, lambda: out.print(f"wrote {path}"))


@command("train-clip")
def train_clip(
    catalog: Annotated[Path, typer.Argument(help="Catalog with images and titles.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Checkpoint folder.")],
    model: Annotated[str | None, typer.Option(help="open_clip architecture (shoptag-tiny, shoptag-small, ViT-B-32...); default: encoders.image_model, else shoptag-small.")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="Start from this checkpoint (path or pretrained tag).")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 5,
    batch_size: Annotated[int, typer.Option(min=2)] = 128,
    lr: float = 5e-4,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps (quick CPU runs).")] = None,
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Contrastive training of an open_clip model on the catalog's image–title pairs (resumable)."""
    from shoptag.catalog.readers import read_catalog
    from shoptag.catalog.records import Product
    from shoptag.pipeline.train_clip import run_train_clip

    with _session(config, workspace, create=True) as (settings, store):
        triples = [
            (r.id, r.image, r.title) for r in read_catalog(catalog, settings.catalog)
            if isinstance(r, Product) and r.image and r.title
        ]
        if len(triples) < 4:
            raise BadInput(f"{catalog} has {len(triples)} products with image and title: too few to train")
        report = run_train_clip(
            triples, out_dir, settings, model_name=model, checkpoint=checkpoint, epochs=epochs,
            batch_size=batch_size, lr=lr, max_steps=max_steps,
        )
        _emit(as_json, report, lambda: out.print(report))


@command()
def serve(
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings: 8080).")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Serve beyond loopback without an API key.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the startup summary as one JSON line on stdout.")]
    = False,
) -> None:
    """Run the storefront HTTP service (similar, real-time tagging, feedback, search, metrics)."""
    import uvicorn

    from shoptag.core.settings import load_settings
    from shoptag.service.app import create_app
    from shoptag.service.auth import check_exposure

    settings = load_settings(config, **({"workspace": workspace} if workspace else {}))
    host, port = host or settings.service.host, port or settings.service.port
    check_exposure(host, settings.service, insecure=insecure)

    def ready(summary: dict) -> None:
        summary = {"url": f"http://{host}:{port}", **summary}
        if as_json:
            print(json.dumps(summary, ensure_ascii=False), flush=True)
        else:
            out.print(f"serving {summary['products']} products ({summary['indexed']} indexed in {summary['backend']}, "
                      f"model {summary['model'] or 'none yet'}) from {summary['workspace']} on {summary['url']}")

    from threadpoolctl import threadpool_limits

    # a service answers many small requests at once: BLAS threads of its own only compete with them, and on a busy
    # machine wait for each other (the 4,076 × 384 product of /recommendations: 0.2 ms on one thread, 12–115 ms
    # on two while other processes held the cores)
    with threadpool_limits(1, "blas"):
        uvicorn.run(create_app(settings, ready), host=host, port=port)


# ---- export -----------------------------------------------------------------------------------------------------
@command()
def export(
    out_file: Annotated[Path | None, typer.Option("--out", "-o", help="File to write (default: stdout).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl (one product a line), csv or parquet (one tag a row).")] = "jsonl",
    status: Annotated[str, typer.Option(help="accepted, review or all.")] = "all",
    family: Annotated[list[str] | None, typer.Option(metavar="FAMILY", help="Only this tag family (repeatable).")] = None,
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every product's tags with score, status and source, streamed; the summary goes to stderr when the
    tags go to stdout."""
    from shoptag.pipeline.export import Format, Status
    from shoptag.pipeline.export import export as run

    for value, allowed, name in ((fmt, Format, "--format"), (status, Status, "--status")):
        if value not in get_args(allowed):
            raise BadInput(f"bad {name} {value!r}: expected one of {', '.join(get_args(allowed))}")
    with _session(config, workspace) as (settings, store):
        _check_families(settings, store, family or [])
        report = run(store, out_file, fmt, status, family)  # type: ignore[arg-type]
        done = f"exported {report.products} products, {report.tags} tags" + (f" → {report.out}" if out_file else "")
        summary = (f"{done}; the write took {report.write_seconds:.2f} s ({report.write_products_per_second:,.0f} "
                   "products/s), start-up not counted")
        if out_file is None:
            err.print_json(json.dumps(_plain(report))) if as_json else err.print(summary, markup=False, highlight=False)
        else:
            _emit(as_json, report, lambda: out.print(summary, markup=False, highlight=False))


# ---- tags without examples ----------------------------------------------------------------------------------------
@command("suggest-tags")
def suggest_tags(
    min_products: Annotated[int, typer.Option(min=2, help="A phrase must occur in this many products.")] = 3,
    limit: Annotated[int, typer.Option(min=1)] = 30,
    accept: Annotated[str | None, typer.Option(help="Accept suggestions by number (e.g. 1,4) of the last run.")] = None,
    family: Annotated[str | None, typer.Option(help="The family accepted suggestions become zero-shot tags of.")] = None,
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Suggest new tags mined from titles and descriptions; accepted ones become zero-shot tags at the next train."""
    from shoptag.pipeline.suggest_tags import accept as run_accept
    from shoptag.pipeline.suggest_tags import suggest_tags as run

    with _session(config, workspace) as (settings, store):
        if accept is not None:
            if not family:
                err.print("[red]--accept needs --family[/]")
                raise typer.Exit(EXIT_USAGE)
            try:
                numbers = [int(n) for n in accept.split(",") if n.strip()]
            except ValueError:
                err.print(f"[red]--accept takes numbers separated by commas, got {accept!r}[/]")
                raise typer.Exit(EXIT_USAGE) from None
            added = run_accept(settings, numbers, family)
            _emit(as_json, {"accepted": [asdict(t) for t in added]},
                  lambda: out.print(f"accepted {len(added)} tag(s) into {family}; `shoptag train` makes them zero-shot tags"))
            return
        found = run(settings, store, _encoders(settings), min_products=min_products, limit=limit, show_progress=not as_json)

        def human() -> None:
            table = Table("#", "tag", "synonyms merged", "products", "coherence", title="suggested tags")
            for s in found:
                table.add_row(str(s["number"]), escape(s["value"]), escape(", ".join(s["synonyms"])), str(s["products"]),
                              f"{s['coherence']:.3f}")
            out.print(table)
            out.print("accept with: shoptag suggest-tags --accept 1,2 --family <family>")

        _emit(as_json, found, human)


@command()
def rules(config: ConfigOpt = None, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Each rule of `taxonomy.rules` against the labels people gave: how often it fires, how often it is right."""
    from shoptag.pipeline.tag_system import read_rules, rule_report

    with _session(config, workspace) as (settings, store):
        report = rule_report(read_rules(settings), store.products(), store.known_tags())

        def human() -> None:
            table = Table("line", "rule", "fired", "correct", "precision", title="rules against the labels")
            for r in report:
                table.add_row(str(r["line"]), escape(r["rule"]), str(r["fired_on_labelled"]), str(r["correct"]),
                              str(r["precision"]))
            out.print(table)

        _emit(as_json, report, human)


# ---- faults and recovery ----------------------------------------------------------------------------------------
def _settings_only(config: Path | None, workspace: Path | None):
    """Settings without opening the store (the commands that check or replace a damaged one)."""
    from shoptag.core.settings import load_settings

    try:
        return load_settings(config, **({"workspace": workspace} if workspace else {}))
    except Exception as exc:  # bad settings file or env var
        err.print(f"[red]settings error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_USAGE) from None


@app.command(cls=_Command)
def check(config: ConfigOpt = None, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Check every file of the workspace: what is damaged, and what repairs it. Exit code 1 if any is."""
    from shoptag.core.errors import OUTCOMES, Corrupt
    from shoptag.pipeline.check import check_workspace

    states = check_workspace(_settings_only(config, workspace))
    _emit(as_json, {"files": [{**asdict(s), "ok": s.ok} for s in states]}, lambda: [
        out.print(f"{'[green]ok[/]' if s.ok else '[red]damaged[/]'}  {s.path}"
                  + ("" if s.ok else f": {s.state}; repair: {s.repair}")) for s in states])
    if not all(s.ok for s in states):
        raise typer.Exit(OUTCOMES[Corrupt].exit_code)


@app.command(cls=_Command)
def backup(
    dest: Annotated[Path, typer.Argument(help="New file to copy the store to.")],
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Copy the store (the one file that cannot be rebuilt) with SQLite's online backup; safe while others write."""
    from shoptag.core.errors import ShoptagError, outcome
    from shoptag.pipeline.workspace import Workspace
    from shoptag.store.backup import backup as run

    settings = _settings_only(config, workspace)
    try:
        run(Workspace(settings.workspace).db_path, dest)
    except ShoptagError as exc:
        err.print("[red]error:[/]", escape(str(exc)))
        raise typer.Exit(outcome(exc).exit_code) from None
    out.print(f"backed up the store to {dest}")


@app.command(cls=_Command)
def restore(
    source: Annotated[Path, typer.Argument(help="A file made by `shoptag backup`.")],
    config: ConfigOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Replace the store by a backup (checked first). Stop `serve` before; run `shoptag reindex` after."""
    from shoptag.core.errors import ShoptagError, outcome
    from shoptag.pipeline.workspace import Workspace
    from shoptag.store.backup import restore as run

    settings = _settings_only(config, workspace)
    try:
        run(source, Workspace(settings.workspace).db_path)
    except ShoptagError as exc:
        err.print("[red]error:[/]", escape(str(exc)))
        raise typer.Exit(outcome(exc).exit_code) from None
    out.print(f"restored the store from {source}; run `shoptag reindex` so search matches it")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted: the next run resumes where this one stopped")
        sys.exit(130)


if __name__ == "__main__":
    main()
