"""Stage: labelled products in the store → a trained, calibrated tagger model in the workspace."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shoptag.core.settings import Settings
from shoptag.store.records import Store
from shoptag.tagger.head import HeadConfig
from shoptag.tagger.model import FitConfig, TaggerModel, fit_tagger, save_model
from shoptag.tagger.split import split_mask

from .encode import Encoders, ProductVectors, encode_products
from .workspace import Workspace


@dataclass
class LabelledSet:
    ids: list[str]
    texts: list[str]
    tags: list[dict[str, list[str]]]
    vectors: ProductVectors


def labelled_set(store: Store, encoders: Encoders, workspace: Workspace, show_progress: bool = True) -> LabelledSet:
    """Every product with at least one catalog or feedback tag, its text and vectors."""
    known = {pid: families for pid, families in store.known_tags().items() if any(families.values())}
    products = store.products(sorted(known))
    cache = workspace.open_cache()
    try:
        vectors, _ = encode_products(products, encoders, cache, show_progress=show_progress)
    finally:
        cache.close()
    return LabelledSet([p.id for p in products], [p.text for p in products], [known[p.id] for p in products], vectors)


def fit_config(settings: Settings) -> FitConfig:
    t = settings.tagger
    return FitConfig(
        knn_k=t.knn_k,
        target_precision=t.target_precision,
        lexical=t.lexical,
        min_tag_count=t.min_tag_count,
        head=HeadConfig(hidden=t.head_hidden, epochs=t.head_epochs, patience=t.head_patience, seed=t.seed),
        index_factory=settings.index.factory,
    )


def fit_on(data: LabelledSet, fit_mask: np.ndarray, val_mask: np.ndarray, settings: Settings, encoders: Encoders) -> TaggerModel:
    if not fit_mask.any() or not val_mask.any():
        raise ValueError(
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
    masks = split_mask(data.ids, settings.tagger.validation_fraction, settings.tagger.test_fraction)
    model = fit_on(data, ~masks["val"], masks["val"], settings, encoders)
    path = save_model(model, workspace.models_dir)
    summary = {
        "model": str(path),
        "labelled": len(data.ids),
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
    return model, summary
