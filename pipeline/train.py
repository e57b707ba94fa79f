"""Stage: labelled products in the store → a trained, calibrated tagger model in the workspace."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from shoptag.core.errors import BadInput
from shoptag.core.settings import Settings
from shoptag.store.records import Store
from shoptag.tagger.head_config import HeadConfig
from shoptag.tagger.metrics import fewest_to_certify
from shoptag.tagger.model import FitConfig, TaggerModel, current_name, fit_tagger, save_model
from shoptag.tagger.split import GroupedSplit, grouped_split
from shoptag.tagger.vocab import build_vocabs

from .encode import Encoders, ProductVectors, encode_products
from .guard import judge, outcomes
from .registry import record, remember_current, write_guard
from .tag import load_checked_model
from .tag_system import Plan, build_tag_system, plan, remove_tag_system, rule_report, save_tag_system
from .workspace import Workspace


@dataclass
class LabelledSet:
    ids: list[str]
    titles: list[str]
    texts: list[str]
    tags: list[dict[str, list[str]]]
    vectors: ProductVectors


def labelled_set(
    store: Store, encoders: Encoders, workspace: Workspace, show_progress: bool = True,
    held_out: Mapping[str, dict[str, list[str]]] | None = None,
) -> LabelledSet:
    """Every product with at least one catalog or feedback label (a value, or "none applies" in a family),
    its text and vectors; with `held_out` (id -> tags), those products too, with the held-out tags instead of
    the store's."""
    known = {pid: families for pid, families in store.known_tags().items() if families}
    if held_out:
        missing = sorted(set(held_out) - set(store.content_hashes(list(held_out))))
        if missing:
            raise BadInput(f"{len(missing)} held-out products are not in the catalog, e.g. {missing[:3]}: ingest them first")
        known.update(held_out)
    products = store.products(sorted(known))
    cache = workspace.open_cache()
    try:
        vectors, _ = encode_products(products, encoders, cache, show_progress=show_progress)
    finally:
        cache.close()
    return LabelledSet(
        [p.id for p in products], [p.title for p in products], [p.text for p in products],
        [known[p.id] for p in products], vectors,
    )


def split_labelled(data: LabelledSet, settings: Settings, test_fraction: float | None = None) -> GroupedSplit:
    """The grouped split of the labelled products: near-duplicates (same normalised title, or fused vectors at
    least `tagger.split_similarity` alike) never straddle training and validation or test."""
    t = settings.tagger
    return grouped_split(
        data.ids, data.titles, t.validation_fraction, t.test_fraction if test_fraction is None else test_fraction,
        data.vectors.fused, t.split_similarity,
    )


def fit_config(settings: Settings) -> FitConfig:
    t = settings.tagger
    return FitConfig(
        knn_k=t.knn_k,
        target_precision=t.target_precision,
        lexical=t.lexical,
        min_tag_count=t.min_tag_count,
        precision_confidence=t.precision_confidence,
        head=HeadConfig(hidden=t.head_hidden, epochs=t.head_epochs, patience=t.head_patience, seed=t.seed),
        index=settings.index,
    )


def fit_on(data: LabelledSet, fit_mask: np.ndarray, val_mask: np.ndarray, settings: Settings, encoders: Encoders) -> TaggerModel:
    if not fit_mask.any() or not val_mask.any():
        raise BadInput(
            f"too few labelled products ({len(data.ids)}) to train and validate: label more products"
        )
    return fit_tagger(
        data.ids, data.vectors.fused, data.texts, data.tags, fit_mask, val_mask, encoders.ids(), fit_config(settings)
    )


def _without(data: LabelledSet, families: set[str]) -> LabelledSet:
    """The labelled set without the zero-shot families' labels (and the products left with no label)."""
    if not families:
        return data
    tags = [{f: v for f, v in t.items() if f not in families} for t in data.tags]
    keep = np.array([bool(t) for t in tags], dtype=bool)
    vectors = replace(data.vectors, text=data.vectors.text[keep], fused=data.vectors.fused[keep],
                      image=None if data.vectors.image is None else data.vectors.image[keep],
                      has_image=data.vectors.has_image[keep])
    rows = np.flatnonzero(keep)
    return LabelledSet([data.ids[i] for i in rows], [data.titles[i] for i in rows], [data.texts[i] for i in rows],
                       [tags[i] for i in rows], vectors)


def _planned_set(settings: Settings, store: Store, encoders: Encoders, workspace: Workspace,
                 show_progress: bool) -> tuple[LabelledSet, Plan]:
    """The labelled set, less the declared families that are still zero-shot, and the plan saying which."""
    data = labelled_set(store, encoders, workspace, show_progress)
    the_plan = plan(settings, data.tags)
    return _without(data, set(the_plan.zero_shot)), the_plan


def _tag_system(settings: Settings, store: Store, encoders: Encoders, workspace: Workspace, the_plan: Plan,
                show_progress: bool) -> dict:
    """Build and save the zero-shot tags, hierarchy and rules (or remove a stale system when none is
    declared any more); what was done, for the summary."""
    if not (the_plan.zero_shot or the_plan.levels or the_plan.rules):
        remove_tag_system(workspace.models_dir)
        return {}
    products = store.products()
    summary = dict(the_plan.summary)
    if the_plan.rules:
        summary["rules"] = rule_report(the_plan.rules, products, store.known_tags())
    catalog = None
    if the_plan.zero_shot:
        cache = workspace.open_cache()
        try:
            catalog, _ = encode_products(products, encoders, cache, show_progress=show_progress)
        finally:
            cache.close()
    save_tag_system(build_tag_system(the_plan, encoders, catalog, settings.encoders.image_weight), workspace.models_dir)
    return summary


def train(
    settings: Settings, store: Store, encoders: Encoders, *, show_progress: bool = True
) -> tuple[TaggerModel | None, dict]:
    """Fit on every labelled product outside the validation split (the test split too: `evaluate` is where
    the test split is held out), tune on the validation split, save atomically.

    Declared tags (taxonomy levels, a tags file) whose values lack `taxonomy.min_reviewed` labelled examples
    are zero-shot instead, and kept out of training; with no family left to learn, only the tag system is
    saved (a catalog with no labels but a taxonomy). The summary says which happened."""
    workspace = Workspace(settings.workspace)
    data, the_plan = _planned_set(settings, store, encoders, workspace, show_progress)
    model, summary = None, {"model": None, "labelled": len(data.ids), "families": {}}
    if the_plan.zero_shot and not build_vocabs(data.tags, settings.tagger.min_tag_count):
        summary["note"] = "no family with labelled examples to learn: every declared family is zero-shot (needs review)"
    else:
        split = split_labelled(data, settings)
        model = fit_on(data, ~split.masks["val"], split.masks["val"], settings, encoders)
        remember_current(workspace.models_dir)
        path = save_model(model, workspace.models_dir)
        record(workspace.models_dir, path.name, "train")
        summary = _summary(model, path, data, split, settings)
    return model, summary | _tag_system(settings, store, encoders, workspace, the_plan, show_progress)


def review_only(model: TaggerModel, settings: Settings) -> dict | None:
    """The families where no tag can be accepted yet, with the labelled products they were tuned on, and why:
    too few tuning labels to certify the precision target, or too many of them were got wrong. None: none."""
    t = settings.tagger
    stuck = {family: fm.report.get("tuned_on") for family, fm in model.families.items()
             if not np.isfinite(fm.thresholds).any()}
    if not stuck:
        return None
    needed = fewest_to_certify(t.target_precision, t.precision_confidence)
    return {
        "families": stuck,
        "why": (f"no threshold showed precision {t.target_precision} at {t.precision_confidence:.0%} confidence "
                f"(that needs at least {needed} right answers in a row per tag or pooled group of rare tags): "
                "every tag of these families goes to review; label more products"),
    }


def not_learnt(model: TaggerModel, tags: list[dict[str, list[str]]]) -> dict[str, dict]:
    """Per family, the labelled values the model cannot emit: too few examples (`tagger.min_tag_count`), seen only
    in the validation split, or a family with too few values to learn. They stay people's tags; more labels teach
    them at the next training. Said in the summary, never dropped silently."""
    seen: dict[str, Counter[str]] = {}
    for product_tags in tags:
        for family, values in product_tags.items():
            seen.setdefault(family, Counter()).update(values)
    out = {}
    for family, counts in sorted(seen.items()):
        fm = model.families.get(family)
        missing = [v for v, _ in counts.most_common() if fm is None or fm.vocab.index(v) is None]
        if missing:
            out[family] = {"values": len(missing), "labels": sum(counts[v] for v in missing),
                           "family_learnt": fm is not None, "examples": missing[:5]}
    return out


def _summary(model: TaggerModel, path: Path, data: LabelledSet, split: GroupedSplit, settings: Settings) -> dict:
    stuck = review_only(model, settings)
    return {
        "model": str(path),
        "labelled": len(data.ids),
        "not_learnt": not_learnt(model, data.tags),
        "split": {"groups": split.groups, "products_in_shared_groups": split.merged_products},
        "families": {
            family: {
                "values": len(fm.vocab),
                "multilabel": fm.vocab.multilabel,
                "weights": fm.weights,
                "temperature": round(fm.temperature, 3),
                "tags_never_emitted": int(np.sum(~np.isfinite(fm.thresholds))),
                "tuned_on": fm.report.get("tuned_on"),
            }
            for family, fm in model.families.items()
        },
        **({"review_only": stuck} if stuck else {}),
    }


def train_if_better(
    settings: Settings, store: Store, encoders: Encoders, *, show_progress: bool = True
) -> tuple[TaggerModel, dict]:
    """Train a candidate with the test split held out, measure it and the current model on that same split, and
    make it current only when no family is worse beyond its tolerance (`review` settings); otherwise it is kept
    aside, and the summary's `guard` says why. A current model trained without holding the split out has seen
    those products, so the guard is then, if anything, too strict."""
    workspace = Workspace(settings.workspace)
    data, the_plan = _planned_set(settings, store, encoders, workspace, show_progress)
    r = settings.review
    split = split_labelled(data, settings)
    masks = split.masks
    if not masks["test"].any():
        raise BadInput("the held-out split is empty: set tagger.test_fraction above 0 or label more products")
    candidate = fit_on(data, masks["train"], masks["val"], settings, encoders)
    rows = np.flatnonzero(masks["test"])
    measured = partial(outcomes, vectors=data.vectors.fused[rows], texts=[data.texts[i] for i in rows],
                       ids=[data.ids[i] for i in rows], truth=[data.tags[i] for i in rows])
    current = current_name(workspace.models_dir)
    cand = measured(candidate)
    promote_it, reasons, cur, seen = True, [], {}, 0.0
    judged = "nothing: there is no current model, so the first one is promoted"
    if current is not None:
        model = load_checked_model(workspace.models_dir, encoders, settings.index)
        cur = measured(model)
        promote_it, reasons, judged = judge(cur, cand, r.tolerance, r.tolerance_by_family, r.guard_min_test,
                                            r.guard_confidence)
        seen = len(set(model.labelled_ids) & {data.ids[i] for i in rows}) / len(rows)
    remember_current(workspace.models_dir)
    path = save_model(candidate, workspace.models_dir, make_current=promote_it)
    verdict = {"promoted": promote_it, "reasons": reasons, "against": current, "judged": judged,
               "held_out": int(len(rows)),
               "current_saw_held_out": round(seen, 4),  # > 0: the current model trained on some of them
               "families": {f: {side: o[f].summary() if f in o else None for side, o in
                                    (("current", cur), ("candidate", cand))} for f in sorted({*cur, *cand})}}
    write_guard(path, verdict)
    if promote_it:
        record(workspace.models_dir, path.name, "train")
    system = _tag_system(settings, store, encoders, workspace, the_plan, show_progress) if promote_it else {}
    return candidate, {**_summary(candidate, path, data, split, settings), "guard": verdict, **system}
