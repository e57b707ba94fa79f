"""The tagger model: per family, three score sources (kNN vote, head, lexical), their fusion weights, a
temperature and per-tag thresholds; plus the FAISS index of labelled products the kNN votes come from.

`fit_tagger` learns all of it from arrays (vectors, texts, known tags) and a fit / validation split
(k-fold cross-fitting instead for small catalogs);
`score_sources` and `decide` apply it. Nothing here reads files or the store: the pipeline does.
Torch is loaded only where a head is trained, applied, saved or read, so a training fits its lexical sources
(its largest arrays) without it in memory.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from shoptag.core.errors import BadInput, Conflict, Corrupt, NotFound
from shoptag.core.files import atomic_write
from shoptag.core.settings import IndexSettings
from shoptag.vectors.faiss_index import VectorIndex, index_options

from .fuse import apply_temperature, choose_weights, fit_temperature, fuse_scores, log_loss
from .head_config import HeadConfig
from .lexical import LexicalClassifier, load_counts, save_counts, shared_counts
from .metrics import choose_thresholds
from .names import name_patterns
from .product_vector import query_scale
from .propagate import select_labelled, vote, vote_weights
from .split import unit_hash
from .text_features import TextCounts
from .vocab import FamilyVocab, build_vocabs

if TYPE_CHECKING:
    from .head import TagHead

KNN_TEMPERATURES = (0.01, 0.02, 0.05, 0.1, 0.2)
EVIDENCE_NEIGHBOURS = 5
REVIEW_CANDIDATES = 5  # a "needs review" family keeps its best few values, so a reviewer can pick another
# 2: the lexical families read one shared `TextCounts` instead of each its own vectorizer
# 3: the lexical source is plain arrays (lexical-*.npz) and a JSON vocabulary (lexical-text.json), never a pickle
FORMAT_VERSION = 3


class ModelFormatError(Conflict):
    """The saved model was written in another format than this version reads: retrain needed."""


@dataclass
class FamilyModel:
    vocab: FamilyVocab
    head: TagHead
    lexical: LexicalClassifier | None
    knn_temperature: float
    weights: dict[str, float]
    temperature: float
    thresholds: np.ndarray  # per tag; +inf: never emitted, always "needs review"
    report: dict = field(default_factory=dict)


@dataclass
class TaggerModel:
    families: dict[str, FamilyModel]
    index: VectorIndex  # fused vectors of the labelled products
    labelled_ids: list[str]
    labels: dict[str, sp.csr_matrix]  # family -> (len(labelled_ids), C) known values
    encoders: dict[str, object]  # text_model, image_model, image_weight: vectors from other encoders are stale
    knn_k: int
    target_precision: float
    created_at: float = field(default_factory=time.time)
    # family -> rows of labelled_ids that vote in it beyond those with a value: "none applies" (multi-valued)
    none_rows: dict[str, np.ndarray] = field(default_factory=dict)
    text_counts: TextCounts | None = None  # shared by every family's lexical classifier

    def row_of(self) -> dict[str, int]:
        return {pid: row for row, pid in enumerate(self.labelled_ids)}

    def labels_changed(self) -> None:
        """Forget what was derived from the labelled set (after `learn_labels` changed it)."""
        for derived in ("key_rows", "label_cells"):
            self.__dict__.pop(derived, None)

    @cached_property
    def key_rows(self) -> np.ndarray:
        """Row into `labelled_ids` of each key of `index` (see `key_rows`)."""
        return key_rows(self.index, self.labelled_ids)

    @cached_property
    def name_patterns(self) -> dict[str, list]:
        """Per family, the patterns of its values' names (`names.name_patterns`), for reading queries."""
        return {family: name_patterns(fm.vocab.values) for family, fm in self.families.items()}

    @cached_property
    def label_cells(self) -> dict[str, np.ndarray]:
        """Per family, the sorted flat positions (row * C + column) of the known labels: one `searchsorted`
        answers "does labelled product r carry tag c" for a whole batch."""
        return {family: _label_cells(labels) for family, labels in self.labels.items()}


@dataclass(frozen=True)
class FitConfig:
    knn_k: int = 20
    target_precision: float = 0.9
    lexical: bool = True
    min_tag_count: int = 1
    precision_confidence: float = 0.95
    head: HeadConfig = HeadConfig()
    weight_step: float = 0.1
    index: IndexSettings = field(default_factory=IndexSettings)  # the kNN index: factory, memory budget, search
    crossfit_below: int = 3000  # fewer labelled products than this: tune on k-fold out-of-fold scores
    crossfit_folds: int = 5


# ---- the kNN source -------------------------------------------------------------------------------------------
def key_rows(index: VectorIndex, labelled_ids: Sequence[str]) -> np.ndarray:
    """An array mapping each int key of `index` to its row in `labelled_ids` (-1: not labelled)."""
    keys = index.keys_of(labelled_ids)
    out = np.full(int(keys.max()) + 1 if len(keys) else 0, -1, dtype=np.int64)
    out[keys[keys >= 0]] = np.flatnonzero(keys >= 0)
    return out


def neighbours(
    index: VectorIndex, rows_of_keys: np.ndarray, vectors: np.ndarray, ids: Sequence[str | None], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rows into the labelled set, cosine-scale similarities) of the `k` nearest labelled products, never
    the product itself; -1 / -inf pad. Ids are read once at the edge; the rest is array work."""
    keys, sims = index.search_keys(vectors, k, index.keys_of(ids))
    rows = np.where(keys >= 0, rows_of_keys[np.maximum(keys, 0)], -1)
    return rows, sims * query_scale(vectors)[:, None]


def knn_scores(
    rows: np.ndarray, sims: np.ndarray, labels: sp.csr_matrix, k: int, temperature: float,
    none_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """kNN vote for one family: (scores, the neighbours used, their weights). Neighbours labelled "none
    applies" (`none_rows`) vote too, for no tag."""
    labelled = np.asarray(labels.sum(1)).ravel() > 0
    if none_rows is not None and len(none_rows):
        labelled[none_rows] = True
    chosen, chosen_sims = select_labelled(rows, sims, labelled, k)
    weights = vote_weights(chosen_sims, temperature)
    return vote(chosen, weights, labels), chosen, weights


def labelled_rows(labels: sp.csr_matrix, tag_rows: Sequence[Mapping[str, Sequence[str]]], family: str, multilabel: bool) -> np.ndarray:
    """Which products teach (or test) a family: those with a value the vocabulary knows, and, in a
    multi-valued family, those labelled "none applies" (an empty list): a negative for every tag. In a
    single-valued family "none applies" leaves the product out of the family."""
    has = np.asarray(labels.sum(1)).ravel() > 0
    if multilabel:
        has |= np.array([family in t and not t[family] for t in tag_rows], dtype=bool)
    return has


def _none_rows(tag_rows: Sequence[Mapping[str, Sequence[str]]], family: str, multilabel: bool) -> np.ndarray:
    if not multilabel:
        return np.zeros(0, dtype=np.int64)
    return np.array([r for r, t in enumerate(tag_rows) if family in t and not t[family]], dtype=np.int64)


def _label_cells(labels: sp.csr_matrix) -> np.ndarray:
    coo = labels.tocoo()
    positive = coo.data > 0
    return np.sort(coo.row[positive].astype(np.int64) * labels.shape[1] + coo.col[positive])


def has_label(cells: np.ndarray, n_columns: int, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Whether labelled product `rows[i, j]` carries tag `columns[i]` (rows -1: False)."""
    wanted = rows * n_columns + columns[:, None]
    at = np.minimum(np.searchsorted(cells, wanted), max(len(cells) - 1, 0))
    return (rows >= 0) & (cells[at] == wanted) if len(cells) else np.zeros(rows.shape, dtype=bool)


def _targets(labels: sp.csr_matrix, multilabel: bool) -> np.ndarray:
    dense = np.asarray(labels.todense())
    return dense if multilabel else dense.argmax(1)


# ---- fitting --------------------------------------------------------------------------------------------------
@dataclass
class _FoldScores:
    """Out-of-sample scores of every source for the rows a fold scores, per family."""

    rows: np.ndarray
    knn: dict[str, dict[float, np.ndarray]]  # family -> kNN temperature -> scores
    head: dict[str, np.ndarray]
    lexical: dict[str, np.ndarray]
    heads: dict[str, tuple[TagHead, dict]]
    lexicals: dict[str, LexicalClassifier]
    index: VectorIndex


def _fit_fold(
    ids: Sequence[str], vectors: np.ndarray, texts: Sequence[str], tags: Sequence[Mapping[str, Sequence[str]]],
    vocabs: Mapping[str, FamilyVocab], train_rows: np.ndarray, score_rows: np.ndarray, config: FitConfig,
) -> _FoldScores:
    """Fit every source on `train_rows` and score `score_rows` with them: every family's kNN vote and lexical
    source first, then the heads, so the lexical fits (the largest arrays of a training: a many-valued family's
    solver holds ~25 float64 copies of its classes × n-grams weights) run before torch is loaded."""
    train_ids = [ids[i] for i in train_rows]
    index = VectorIndex.build(train_ids, vectors[train_rows], **index_options(config.index))
    nb_rows, nb_sims = neighbours(
        index, key_rows(index, train_ids), vectors[score_rows], [ids[i] for i in score_rows], 2 * config.knn_k
    )
    fold = _FoldScores(score_rows, {}, {}, {}, {}, {}, index)
    train_tags, score_tags = [tags[i] for i in train_rows], [tags[i] for i in score_rows]
    targets = {}
    for family, vocab in vocabs.items():
        train_labels = vocab.label_matrix([t.get(family) for t in train_tags])
        has = labelled_rows(train_labels, train_tags, family, vocab.multilabel)
        y_train = _targets(train_labels[has], vocab.multilabel)
        targets[family] = has, y_train
        none = _none_rows(train_tags, family, vocab.multilabel)
        fold.knn[family] = {
            t: knn_scores(nb_rows, nb_sims, train_labels, config.knn_k, t, none)[0] for t in KNN_TEMPERATURES
        }
        if config.lexical:
            lexical = LexicalClassifier().fit(
                [texts[i] for i in train_rows[has]], y_train, len(vocab), multilabel=vocab.multilabel
            )
            fold.lexicals[family] = lexical
            fold.lexical[family] = lexical.predict_proba([texts[i] for i in score_rows])
    from .head import predict_head, train_head  # loads torch (~0.5 GB): after the lexical fits

    for family, vocab in vocabs.items():
        has, y_train = targets[family]
        score_labels = vocab.label_matrix([t.get(family) for t in score_tags])
        score_has = labelled_rows(score_labels, score_tags, family, vocab.multilabel)
        head = train_head(
            vectors[train_rows][has], y_train, vectors[score_rows][score_has],
            _targets(score_labels[score_has], vocab.multilabel), len(vocab), vocab.multilabel, config.head,
        )
        fold.heads[family] = head
        fold.head[family] = predict_head(head[0], vectors[score_rows], vocab.multilabel)
    return fold


def _folds(ids: Sequence[str], fit_rows: np.ndarray, val_rows: np.ndarray, config: FitConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, score rows) pairs: the given split, or k folds of all labelled rows for small catalogs,
    where a 15% validation slice would be too few products to calibrate on."""
    pool = np.sort(np.concatenate([fit_rows, val_rows]))
    if len(pool) >= config.crossfit_below:
        return [(fit_rows, val_rows)]
    fold_of = np.array([int(unit_hash(ids[i], salt="shoptag-fold") * config.crossfit_folds) for i in pool])
    return [(pool[fold_of != f], pool[fold_of == f]) for f in range(config.crossfit_folds) if (fold_of == f).any()]


def fit_tagger(
    ids: Sequence[str],
    vectors: np.ndarray,
    texts: Sequence[str],
    tags: Sequence[Mapping[str, Sequence[str]]],
    fit_mask: np.ndarray,
    val_mask: np.ndarray,
    encoders: Mapping[str, object],
    config: FitConfig = FitConfig(),
) -> TaggerModel:
    """Learn a tagger from the labelled products in `fit_mask`, choosing everything tunable on `val_mask`
    (or, for small catalogs, on out-of-fold scores of all of them).

    After tuning, the validation products join the kNN index, so production tagging sees every label.
    """
    fit_rows, val_rows = np.flatnonzero(fit_mask), np.flatnonzero(val_mask)
    pool = np.sort(np.concatenate([fit_rows, val_rows]))
    vocabs = build_vocabs([tags[i] for i in fit_rows], config.min_tag_count)
    if not vocabs:
        raise BadInput("no tag family with at least two learnable values among the labelled products")
    folds = [_fit_fold(ids, vectors, texts, tags, vocabs, tr, sc, config) for tr, sc in _folds(ids, fit_rows, val_rows, config)]
    crossfit = len(folds) > 1
    scored = np.concatenate([f.rows for f in folds])

    families: dict[str, FamilyModel] = {}
    for family, vocab in vocabs.items():
        labels = vocab.label_matrix([tags[i].get(family) for i in scored])
        has = labelled_rows(labels, [tags[i] for i in scored], family, vocab.multilabel)
        if not has.any():
            continue
        y = _targets(labels[has], vocab.multilabel)
        knn_by_t = {t: np.vstack([f.knn[family][t] for f in folds])[has] for t in KNN_TEMPERATURES}
        knn_t = min(KNN_TEMPERATURES, key=lambda t: log_loss(knn_by_t[t] + 1e-3, y, vocab.multilabel))
        sources = {"knn": knn_by_t[knn_t], "head": np.vstack([f.head[family] for f in folds])[has]}
        if config.lexical:
            sources["lexical"] = np.vstack([f.lexical[family] for f in folds])[has]
        weights = choose_weights(sources, y, vocab.multilabel, config.weight_step)
        fused = fuse_scores(sources, weights)
        temperature = fit_temperature(fused, y, vocab.multilabel)
        thresholds = choose_thresholds(
            apply_temperature(fused, temperature, vocab.multilabel), y, config.target_precision,
            confidence=config.precision_confidence,
        )
        if crossfit:  # refit on every labelled product, as many epochs as the folds found best
            from .head import train_head

            pool_labels = vocab.label_matrix([tags[i].get(family) for i in pool])
            pool_has = labelled_rows(pool_labels, [tags[i] for i in pool], family, vocab.multilabel)
            y_pool = _targets(pool_labels[pool_has], vocab.multilabel)
            epochs = int(np.median([f.heads[family][1]["best_epoch"] for f in folds])) + 1
            no_rows = np.zeros((0, vectors.shape[1]), dtype=np.float32)
            head, head_report = train_head(
                vectors[pool][pool_has], y_pool, no_rows, y_pool[:0], len(vocab), vocab.multilabel,
                replace(config.head, epochs=epochs),
            )
            lexical = (
                LexicalClassifier().fit([texts[i] for i in pool[pool_has]], y_pool, len(vocab), multilabel=vocab.multilabel)
                if config.lexical else None
            )
        else:
            head, head_report = folds[0].heads[family]
            lexical = folds[0].lexicals.get(family)
        families[family] = FamilyModel(
            vocab, head, lexical, knn_t, weights, temperature, thresholds,
            report={"head": head_report, "knn_temperature": knn_t, "tuned_on": int(has.sum()),
                    "tuning": f"{len(folds)}-fold cross-fitting" if crossfit else "validation split"},
        )

    order = pool if crossfit else np.concatenate([fit_rows, val_rows])
    labelled_ids = [ids[i] for i in order]
    if crossfit:
        index = VectorIndex.build(labelled_ids, vectors[order], **index_options(config.index))
    else:
        index = folds[0].index
        index.add([ids[i] for i in val_rows], vectors[val_rows])
    labels = {family: fm.vocab.label_matrix([tags[i].get(family) for i in order]) for family, fm in families.items()}
    none_rows = {family: _none_rows([tags[i] for i in order], family, fm.vocab.multilabel) for family, fm in families.items()}
    lexicals = [fm.lexical for fm in families.values() if fm.lexical is not None]
    text_counts = shared_counts([texts[i] for i in pool]) if lexicals else None
    for lexical in lexicals:  # every family's training titles are labelled products: all in `pool`
        lexical.share(text_counts)
    return TaggerModel(
        families, index, labelled_ids, labels, dict(encoders), config.knn_k, config.target_precision,
        none_rows={f: rows for f, rows in none_rows.items() if len(rows)}, text_counts=text_counts,
    )


# ---- applying -------------------------------------------------------------------------------------------------
@dataclass
class FamilyScores:
    """Every source's scores for one family over a batch of products, and the kNN evidence."""

    sources: dict[str, np.ndarray]
    fused: np.ndarray  # calibrated
    neighbour_rows: np.ndarray
    neighbour_weights: np.ndarray


def score_sources(
    model: TaggerModel, vectors: np.ndarray, texts: Sequence[str], ids: Sequence[str | None]
) -> dict[str, FamilyScores]:
    """Scores of every source and the fused, calibrated score, per family, for a batch of products."""
    from .head import predict_head

    rows, sims = neighbours(model.index, model.key_rows, vectors, ids, 2 * model.knn_k)
    counts = model.text_counts.transform(texts) if model.text_counts is not None else None
    out = {}
    for family, fm in model.families.items():
        knn, chosen, weights = knn_scores(
            rows, sims, model.labels[family], model.knn_k, fm.knn_temperature, model.none_rows.get(family)
        )
        sources = {"knn": knn, "head": predict_head(fm.head, vectors, fm.vocab.multilabel)}
        if fm.lexical is not None:
            sources["lexical"] = fm.lexical.predict_counts(counts)
        fused = apply_temperature(fuse_scores(sources, fm.weights), fm.temperature, fm.vocab.multilabel)
        out[family] = FamilyScores(sources, fused, chosen, weights)
    return out


@dataclass(frozen=True)
class TagDecision:
    family: str
    value: str
    score: float
    status: str  # "accepted" | "review"
    evidence: dict


def decide(
    model: TaggerModel, scores: Mapping[str, FamilyScores], modalities: Sequence[str],
    skip: Sequence[Collection[str]] | None = None, *, decide_skipped: bool = False,
) -> list[list[TagDecision]]:
    """The tags of each product of a scored batch: a tag is accepted when its calibrated score reaches its
    threshold; a family with no accepted tag gets its best candidate marked "review", never a guess.

    `skip[i]` names the families product i already has people's tags in: nothing is decided there, so no
    evidence is built only to be dropped; with `decide_skipped` (a tag system weighs every family's decision)
    they are decided, with empty evidence."""
    out: list[list[TagDecision]] = [[] for _ in modalities]
    for family, fs in scores.items():
        fm = model.families[family]
        explained = np.ones(len(modalities), dtype=bool) if skip is None else np.array(
            [family not in s for s in skip], dtype=bool)
        rows = np.arange(len(modalities)) if decide_skipped else np.flatnonzero(explained)
        fused = fs.fused[rows]
        best = fused.argmax(1) if len(rows) else np.zeros(0, dtype=np.int64)
        if fm.vocab.multilabel:
            picked = fused >= fm.thresholds
            review = ~picked.any(1)
            picked[review, best[review]] = True
            at, cols = np.nonzero(picked)  # row-major: each product's tags in vocabulary order
            review = review[at]
        else:
            at, cols = np.arange(len(rows)), best
            review = ~(fused[at, cols] >= fm.thresholds[cols])
        at = rows[at]
        keep = explained[at]
        evidence: list[dict] = [{} for _ in range(len(at))]
        for i, ev in zip(np.flatnonzero(keep).tolist(),
                         _evidence(model, fs, family, at[keep], cols[keep], [modalities[r] for r in at[keep]])):
            evidence[i] = ev
        values, scores_of = fm.vocab.values, fs.fused[at, cols].tolist()
        for r, col, score, is_review, ev in zip(at.tolist(), cols.tolist(), scores_of, review.tolist(), evidence):
            if is_review and explained[r]:
                top = np.argsort(-fs.fused[r], kind="stable")[:REVIEW_CANDIDATES]
                ev["candidates"] = [{"value": values[c], "score": round(float(fs.fused[r, c]), 4),
                                     "threshold": float(fm.thresholds[c]) if np.isfinite(fm.thresholds[c]) else None}
                                    for c in top]
            out[r].append(TagDecision(family, values[col], score, "review" if is_review else "accepted", ev))
    return out


def _evidence(
    model: TaggerModel, fs: FamilyScores, family: str, rows: np.ndarray, cols: np.ndarray, modalities: Sequence[str]
) -> list[dict]:
    """Why each tag (product `rows[i]`, tag `cols[i]`): each source's score, the fusion weights, and the
    neighbours that voted for it. The label look-ups run on whole arrays."""
    labels = model.labels[family]
    neighbour_rows, weights = fs.neighbour_rows[rows], fs.neighbour_weights[rows]
    voted = has_label(model.label_cells[family], labels.shape[1], neighbour_rows, cols)
    fm = model.families[family]
    sources = {name: s[rows, cols].tolist() for name, s in fs.sources.items()}
    thresholds = [t if np.isfinite(t) else None for t in fm.thresholds[cols].tolist()]
    ids = model.labelled_ids
    out = []
    for i, (nb, w, v) in enumerate(zip(neighbour_rows.tolist(), weights.tolist(), voted.tolist())):
        voters = [{"id": ids[r], "weight": round(x, 4)} for r, x, yes in zip(nb, w, v) if yes]
        voters.sort(key=lambda voter: -voter["weight"])
        out.append({
            "sources": {name: round(s[i], 4) for name, s in sources.items()},
            "weights": fm.weights,
            "threshold": thresholds[i],
            "neighbours": voters[:EVIDENCE_NEIGHBOURS],
            "modality": modalities[i],
        })
    return out


def learn_labels(
    model: TaggerModel, ids: Sequence[str], vectors: np.ndarray, tags: Sequence[Mapping[str, Sequence[str]]]
) -> None:
    """People's latest labels of `ids` (all their families) take part in the kNN vote at once: products new to the
    labelled set join the index, known ones get their label rows replaced. The heads, the lexical source and the
    calibration learn them at the next training."""
    row_of = model.row_of()
    new = [i for i, pid in enumerate(ids) if pid not in row_of]
    if new:
        model.index.add([ids[i] for i in new], vectors[new])
        row_of.update({ids[i]: len(model.labelled_ids) + k for k, i in enumerate(new)})
        model.labelled_ids.extend(ids[i] for i in new)
    for family, fm in model.families.items():
        labels = model.labels[family]
        if new:
            labels = sp.vstack([labels, sp.csr_matrix((len(new), labels.shape[1]), dtype=labels.dtype)])
        rows = fm.vocab.label_matrix([t.get(family) for t in tags])
        labels = labels.tolil()
        for i, pid in enumerate(ids):
            labels[row_of[pid]] = rows[i]
        model.labels[family] = labels.tocsr()
        if fm.vocab.multilabel:  # "none applies" votes too; a product given values no longer says so
            changed = np.array([row_of[pid] for pid, t in zip(ids, tags) if family in t], dtype=np.int64)
            cleared = np.array([row_of[pid] for pid, t in zip(ids, tags) if family in t and not t[family]], dtype=np.int64)
            kept = np.setdiff1d(model.none_rows.get(family, np.zeros(0, np.int64)), changed)
            model.none_rows[family] = np.union1d(kept, cleared).astype(np.int64)
    model.labels_changed()


# ---- persistence ----------------------------------------------------------------------------------------------
def save_model(model: TaggerModel, models_dir: Path, *, make_current: bool = True) -> Path:
    """Write the model to a new folder, then (unless told not to: a candidate kept aside) point
    `models_dir/current` at it with one atomic rename."""
    from .head import save_heads

    models_dir.mkdir(parents=True, exist_ok=True)
    base = time.strftime("tagger-%Y%m%d-%H%M%S", time.localtime(model.created_at)) + f"-{os.getpid()}"
    name, n = base, 1
    while (models_dir / name).exists():  # two models within one second of one process (a guarded retrain)
        n += 1
        name = f"{base}-{n}"
    tmp, final = models_dir / f"{name}.tmp", models_dir / name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    meta = {
        "format": FORMAT_VERSION,
        "encoders": model.encoders,
        "knn_k": model.knn_k,
        "target_precision": model.target_precision,
        "created_at": model.created_at,
        "labelled": len(model.labelled_ids),
        "families": {
            family: {
                "vocab": fm.vocab.to_dict(),
                "knn_temperature": fm.knn_temperature,
                "weights": fm.weights,
                "temperature": fm.temperature,
                "thresholds": [t if np.isfinite(t) else None for t in fm.thresholds.tolist()],
                "lexical": fm.lexical is not None,
                "report": fm.report,
            }
            for family, fm in model.families.items()
        },
    }
    (tmp / "model.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1))
    save_heads({family: fm.head for family, fm in model.families.items()}, tmp / "heads.pt")
    for family, fm in model.families.items():
        if fm.lexical is not None:
            fm.lexical.save(tmp / f"lexical-{_safe(family)}.npz")
    if model.text_counts is not None:
        save_counts(model.text_counts, tmp / "lexical-text.json")
    model.index.save(tmp / "index.npz")
    sp.save_npz(tmp / "labels.npz", sp.hstack([model.labels[f] for f in model.families]).tocsr())
    (tmp / "labelled_ids.json").write_text(json.dumps(model.labelled_ids, ensure_ascii=False))
    np.savez(tmp / "none_rows.npz", **{_safe(f): rows for f, rows in model.none_rows.items()})
    os.replace(tmp, final)
    if make_current:
        set_current(models_dir, name)
    return final


def set_current(models_dir: Path, name: str) -> None:
    """Point `models_dir/current` at the model folder `name`: one atomic rename, so readers see the old model or
    the new one, never neither."""
    if not (models_dir / name / "model.json").is_file():
        raise NotFound(f"no model {name!r} in {models_dir}")
    with atomic_write(models_dir / "current", "w", encoding="utf-8") as fh:
        fh.write(name)


def current_name(models_dir: Path) -> str | None:
    pointer = models_dir / "current"
    return pointer.read_text().strip() if pointer.is_file() else None


def load_model(models_dir: Path, name: str | None = None, index: IndexSettings | None = None) -> TaggerModel:
    """The model folder `name`, by default the one `models_dir/current` points at, its kNN index searching as
    `index` says (as saved when None); `Conflict` before the first training, `NotFound` for a name that is not
    there, `Corrupt` when its files cannot be read back."""
    if name is not None and not (models_dir / name / "model.json").is_file():
        raise NotFound(f"no model {name!r} in {models_dir}")
    name = name or current_name(models_dir)
    if name is None:
        raise Conflict(f"no trained model in {models_dir}: run `shoptag train` first")
    folder = models_dir / name
    try:
        return _read_model(folder, index)
    except (OSError, EOFError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile) as exc:
        raise Corrupt(f"model {folder} cannot be read ({type(exc).__name__}: {exc}): run `shoptag train` again") \
            from exc


def _read_model(folder: Path, index: IndexSettings | None) -> TaggerModel:
    meta = json.loads((folder / "model.json").read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise ModelFormatError(
            f"the model in {folder} has format {meta.get('format')}, this version of shoptag reads format "
            f"{FORMAT_VERSION}: retrain needed, run `shoptag train`"
        )
    from .head import load_heads

    heads = load_heads(folder / "heads.pt")
    stacked = sp.load_npz(folder / "labels.npz").tocsc()
    none_file = folder / "none_rows.npz"
    saved_none = dict(np.load(none_file, allow_pickle=False)) if none_file.is_file() else {}
    families, labels, start = {}, {}, 0
    for family, fmeta in meta["families"].items():
        vocab = FamilyVocab.from_dict(fmeta["vocab"])
        labels[family] = stacked[:, start : start + len(vocab)].tocsr()
        start += len(vocab)
        lexical = LexicalClassifier.load(folder / f"lexical-{_safe(family)}.npz") if fmeta["lexical"] else None
        thresholds = np.array([np.inf if t is None else t for t in fmeta["thresholds"]], dtype=np.float64)
        families[family] = FamilyModel(
            vocab, heads[family], lexical, fmeta["knn_temperature"], fmeta["weights"],
            fmeta["temperature"], thresholds, fmeta["report"],
        )
    return TaggerModel(
        families,
        VectorIndex.load(folder / "index.npz", index),
        json.loads((folder / "labelled_ids.json").read_text()),
        labels,
        meta["encoders"],
        meta["knn_k"],
        meta["target_precision"],
        meta["created_at"],
        {family: saved_none[_safe(family)] for family in families if _safe(family) in saved_none},
        load_counts(folder / "lexical-text.json") if (folder / "lexical-text.json").is_file() else None,
    )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
