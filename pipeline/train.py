"""Stage: labelled products in the store → a trained, calibrated tagger model in the workspace."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from shoptag.core.errors import BadInput
from shoptag.core.settings import Settings
from shoptag.store.records import Store
from shoptag.tagger.head import HeadConfig
from shoptag.tagger.model import FitConfig, TaggerModel, current_name, fit_tagger, save_model
from shoptag.tagger.split import GroupedSplit, grouped_split

from .encode import Encoders, ProductVectors, encode_products
from .guard import family_metrics, judge
from .registry import record, remember_current, write_guard
from .tag import load_checked_model
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
        index_factory=settings.index.factory,
    )


def fit_on(data: LabelledSet, fit_mask: np.ndarray, val_mask: np.ndarray, settings: Settings, encoders: Encoders) -> TaggerModel:
    if not fit_mask.any() or not val_mask.any():
        raise BadInput(
            f"too few labelled products ({len(data.ids)}) to train and validate: label more products"
        )
    return fit_tagger(
        data.ids, data.vectors.fused, data.texts, data.tags, fit_mask, val_mask, encoders.ids(), fit_config(settings)
    )


def train(settings: Settings, store: Store, encoders: Encoders, *, show_progress: bool = True) -> tuple[TaggerModel, dict]:
    """Fit on every labelled product outside the validation split (the test split too: `evaluate` is where
    the test split is held out), tune on the validation split, save atomically."""
    workspace = Workspace(settings.workspace)
    data = labelled_set(store, encoders, workspace, show_progress)
    split = split_labelled(data, settings)
    model = fit_on(data, ~split.masks["val"], split.masks["val"], settings, encoders)
    remember_current(workspace.models_dir)
    path = save_model(model, workspace.models_dir)
    record(workspace.models_dir, path.name, "train")
    return model, _summary(model, path, data, split)


def _summary(model: TaggerModel, path: Path, data: LabelledSet, split: GroupedSplit) -> dict:
    return {
        "model": str(path),
        "labelled": len(data.ids),
        "split": {"groups": split.groups, "products_in_shared_groups": split.merged_products},
        "families": {
            family: {
                "values": len(fm.vocab),
                "multilabel": fm.vocab.multilabel,
                "weights": fm.weights,
                "temperature": round(fm.temperature, 3),
                "tags_never_emitted": int(np.sum(~np.isfinite(fm.thresholds))),
            }
            for family, fm in model.families.items()
        },
    }


def train_if_better(
    settings: Settings, store: Store, encoders: Encoders, *, show_progress: bool = True
) -> tuple[TaggerModel, dict]:
    """Train a candidate with the test split held out, measure it and the current model on that same split, and
    make it current only when no family is worse beyond its tolerance (`review` settings); otherwise it is kept
    aside, and the summary's `guard` says why. A current model trained without holding the split out has seen
    those products, so the guard is then, if anything, too strict."""
    workspace = Workspace(settings.workspace)
    data = labelled_set(store, encoders, workspace, show_progress)
    r = settings.review
    split = split_labelled(data, settings)
    masks = split.masks
    if not masks["test"].any():
        raise BadInput("the held-out split is empty: set tagger.test_fraction above 0 or label more products")
    candidate = fit_on(data, masks["train"], masks["val"], settings, encoders)
    rows = np.flatnonzero(masks["test"])
    measured = partial(family_metrics, vectors=data.vectors.fused[rows], texts=[data.texts[i] for i in rows],
                       ids=[data.ids[i] for i in rows], truth=[data.tags[i] for i in rows])
    current = current_name(workspace.models_dir)
    cand = measured(candidate)
    promote_it, reasons, cur, seen = True, [], {}, 0.0
    if current is not None:
        model = load_checked_model(workspace.models_dir, encoders)
        cur = measured(model)
        promote_it, reasons = judge(cur, cand, r.tolerance, r.tolerance_by_family, r.guard_min_test)
        seen = len(set(model.labelled_ids) & {data.ids[i] for i in rows}) / len(rows)
    remember_current(workspace.models_dir)
    path = save_model(candidate, workspace.models_dir, make_current=promote_it)
    verdict = {"promoted": promote_it, "reasons": reasons, "against": current, "held_out": int(len(rows)),
               "current_saw_held_out": round(seen, 4),  # > 0: the current model trained on some of them
               "families": {f: {"current": cur.get(f), "candidate": cand.get(f)} for f in sorted({*cur, *cand})}}
    write_guard(path, verdict)
    if promote_it:
        record(workspace.models_dir, path.name, "train")
    return candidate, {**_summary(candidate, path, data, split), "guard": verdict}
