"""The promotion guard: a candidate model against the current one on the same held-out products, per family.

Each model is measured as it would tag: its fused, calibrated scores and its own thresholds. Values are compared
as strings, so two models with different vocabularies are judged on the same truth (a value a model never learnt
counts as a miss). The candidate is refused when, in any family with enough held-out labels (or in the smaller
families pooled), its weighted F1 or its coverage at the target precision is lower than the current model's by
more than that family's tolerance, when it drops a family the current model tags, or when no family can be
compared at all (too few held-out labels: not shown to be no worse).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from shoptag.tagger.metrics import classification_metrics, multilabel_metrics
from shoptag.tagger.model import TaggerModel, score_sources

GUARDED = ("f1_weighted", "coverage_at_target")


def family_metrics(
    model: TaggerModel, vectors: np.ndarray, texts: Sequence[str], ids: Sequence[str],
    truth: Sequence[Mapping[str, Sequence[str]]],
) -> dict[str, dict[str, float]]:
    """Per family the model tags: weighted F1 of its best guess (multi-valued: of the values scoring ≥ 0.5),
    coverage at the target precision (share of products that get a tag without review) and the precision of
    those tags, over the products whose `truth` has that family."""
    scored = score_sources(model, vectors, texts, ids)
    out = {}
    for family, fs in scored.items():
        fm = model.families[family]
        rows = [r for r, t in enumerate(truth) if t.get(family)]
        if not rows:
            continue
        values = list(fm.vocab.values)
        names = {v: i for i, v in enumerate(dict.fromkeys([*values, *(v for r in rows for v in truth[r][family])]))}
        fused = fs.fused[rows]
        col = np.array([names[v] for v in values])  # model column -> shared label id
        emitted = fused >= fm.thresholds[None, :]
        if fm.vocab.multilabel:
            true_hot = np.zeros((len(rows), len(names)), dtype=int)
            pred_hot = np.zeros_like(true_hot)
            for k, r in enumerate(rows):
                true_hot[k, [names[v] for v in truth[r][family]]] = 1
            pred_hot[:, col] = fused >= 0.5
            f1 = multilabel_metrics(true_hot, pred_hot)["f1_weighted"]
            emitted_hot = np.zeros_like(true_hot)
            emitted_hot[:, col] = emitted
            n_emitted, n_right = int(emitted_hot.sum()), int((emitted_hot & true_hot).sum())
            covered = emitted.any(axis=1)
        else:
            best = fused.argmax(1)
            y_true = np.array([names[truth[r][family][0]] for r in rows])
            y_pred = col[best]
            f1 = classification_metrics(y_true, y_pred, len(names))["f1_weighted"]
            covered = emitted[np.arange(len(rows)), best]
            n_emitted, n_right = int(covered.sum()), int((covered & (y_pred == y_true)).sum())
        out[family] = {
            "f1_weighted": round(float(f1), 4),
            "coverage_at_target": round(float(covered.mean()), 4),
            "precision_at_target": round(n_right / n_emitted, 4) if n_emitted else None,
            "n": len(rows),
        }
    return out


POOLED = "families pooled"


def judge(
    current: Mapping[str, dict], candidate: Mapping[str, dict], tolerance: float,
    tolerance_by_family: Mapping[str, float], min_test: int,
) -> tuple[bool, list[str], str]:
    """(promote?, the reasons it may not, what was judged). A family with at least `min_test` held-out labels is
    judged alone; the smaller ones together, their metrics weighted by held-out labels, when they have `min_test`
    between them (`tolerance` applies). A dropped family is always a reason. When nothing has enough held-out
    labels the candidate cannot be shown not to be worse, so it is refused: the current model stays."""
    reasons, judged, small = [], [], []
    for family, cur in current.items():
        cand = candidate.get(family)
        if cand is None:
            reasons.append(f"{family}: the candidate does not tag this family")
        elif cur["n"] >= min_test:
            judged.append(family)
            reasons += _worse(family, cur, cand, tolerance_by_family.get(family, tolerance))
        else:
            small.append(family)
    pooled_n = sum(current[f]["n"] for f in small)
    if small and pooled_n >= min_test:
        pool = {side: {m: sum(src[f][m] * current[f]["n"] for f in small) / pooled_n for m in GUARDED}
                for side, src in (("current", current), ("candidate", candidate))}
        judged.append(f"{len(small)} {POOLED} ({pooled_n} labels)")
        reasons += _worse(f"{len(small)} {POOLED}", pool["current"], pool["candidate"], tolerance)
    if not judged:
        most = max((c["n"] for c in current.values()), default=0)
        reasons.append(f"no family has enough held-out labels to compare (need {min_test}, the most is {most}, "
                       f"{pooled_n} in all): it cannot be shown to be no worse, so the current model stays "
                       "(`shoptag model promote` uses it anyway)")
    what = ", ".join(judged) if judged else "nothing"
    return not reasons, reasons, what


def _worse(name: str, cur: Mapping[str, float], cand: Mapping[str, float], allowed: float) -> list[str]:
    return [f"{name}: {metric} {cand[metric]:.4f} < current {cur[metric]:.4f} - tolerance {allowed:g}"
            for metric in GUARDED if cand[metric] < cur[metric] - allowed]
