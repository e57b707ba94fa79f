"""The promotion guard: a candidate model against the current one on the same held-out products, per family.

Each model is measured as it would tag: its fused, calibrated scores and its own thresholds. Values are compared
as strings, so two models with different vocabularies are judged on the same truth (a value a model never learnt
counts as a miss). The candidate is refused when, in any family with enough held-out labels (or in the smaller
families pooled), its weighted F1 or its coverage at the target precision is lower than the current model's by
more than that family's tolerance, and a paired bootstrap over those products shows it so in at least the
`confidence` share of resamples (on a few dozen products one product moves weighted F1 by several points: a
point estimate alone refuses good candidates for noise); when it drops a family the current model tags; or when
no family can be compared at all (too few held-out labels: not shown to be no worse).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from shoptag.tagger.metrics import classification_metrics, multilabel_metrics
from shoptag.tagger.model import TaggerModel, score_sources

GUARDED = ("f1_weighted", "coverage_at_target")


RESAMPLES = 300
SEED = 0


@dataclass(frozen=True)
class Outcome:
    """One model's result on each held-out product of one family: truth and guess (label ids, or multi-hot
    rows), and per product the tags emitted at the target precision and how many of them are right."""

    truth: np.ndarray
    guess: np.ndarray
    emitted: np.ndarray
    right: np.ndarray

    def __len__(self) -> int:
        return len(self.truth)

    def metrics(self, rows: np.ndarray | None = None) -> dict[str, float]:
        """Weighted F1, coverage at the target precision and its precision, over `rows` (default: all)."""
        take = slice(None) if rows is None else rows
        truth, guess, emitted, right = self.truth[take], self.guess[take], self.emitted[take], self.right[take]
        f1 = (multilabel_metrics(truth, guess) if truth.ndim == 2
              else classification_metrics(truth, guess, int(max(truth.max(), guess.max())) + 1))["f1_weighted"]
        n_emitted = int(emitted.sum())
        return {"f1_weighted": float(f1), "coverage_at_target": float((emitted > 0).mean()),
                "precision_at_target": int(right.sum()) / n_emitted if n_emitted else None, "n": len(truth)}

    def summary(self) -> dict[str, float | None]:
        """`metrics()` over every product, rounded for reports."""
        return {k: v if k == "n" or v is None else round(v, 4) for k, v in self.metrics().items()}


def outcomes(
    model: TaggerModel, vectors: np.ndarray, texts: Sequence[str], ids: Sequence[str],
    truth: Sequence[Mapping[str, Sequence[str]]],
) -> dict[str, Outcome]:
    """Per family the model tags, its `Outcome` over the products whose `truth` has that family: the best
    guess (multi-valued: the values scoring ≥ 0.5) and the tags its thresholds emit."""
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
            for k, r in enumerate(rows):
                true_hot[k, [names[v] for v in truth[r][family]]] = 1
            guess, emitted_hot = np.zeros_like(true_hot), np.zeros_like(true_hot)
            guess[:, col] = fused >= 0.5
            emitted_hot[:, col] = emitted
            out[family] = Outcome(true_hot, guess, emitted_hot.sum(1), (emitted_hot & true_hot).sum(1))
        else:
            best = fused.argmax(1)
            y_true = np.array([names[truth[r][family][0]] for r in rows])
            y_pred = col[best]
            covered = emitted[np.arange(len(rows)), best].astype(int)
            out[family] = Outcome(y_true, y_pred, covered, covered * (y_pred == y_true))
    return out


def family_metrics(
    model: TaggerModel, vectors: np.ndarray, texts: Sequence[str], ids: Sequence[str],
    truth: Sequence[Mapping[str, Sequence[str]]],
) -> dict[str, dict[str, float]]:
    """Per family the model tags: weighted F1, coverage at the target precision and the precision of those
    tags (rounded), over the products whose `truth` has that family."""
    return {f: o.summary() for f, o in outcomes(model, vectors, texts, ids, truth).items()}


POOLED = "families pooled"


def judge(
    current: Mapping[str, Outcome], candidate: Mapping[str, Outcome], tolerance: float,
    tolerance_by_family: Mapping[str, float], min_test: int, confidence: float,
) -> tuple[bool, list[str], str]:
    """(promote?, the reasons it may not, what was judged). A family with at least `min_test` held-out labels is
    judged alone; the smaller ones together, their metrics weighted by held-out labels, when they have `min_test`
    between them (`tolerance` applies). Worse means below the current model by more than the tolerance, on the
    point estimate and in at least `confidence` of the paired resamples. A dropped family is always a reason.
    When nothing has enough held-out labels the candidate cannot be shown not to be worse, so it is refused:
    the current model stays."""
    reasons, judged, small = [], [], []
    for family, cur in current.items():
        if family not in candidate:
            reasons.append(f"{family}: the candidate does not tag this family")
        elif len(cur) >= min_test:
            judged.append(family)
            reasons += _worse(family, [(cur, candidate[family])], tolerance_by_family.get(family, tolerance),
                              confidence)
        else:
            small.append(family)
    pooled_n = sum(len(current[f]) for f in small)
    if small and pooled_n >= min_test:
        judged.append(f"{len(small)} {POOLED} ({pooled_n} labels)")
        reasons += _worse(f"{len(small)} {POOLED}", [(current[f], candidate[f]) for f in small], tolerance, confidence)
    if not judged:
        most = max((len(c) for c in current.values()), default=0)
        reasons.append(f"no family has enough held-out labels to compare (need {min_test}, the most is {most}, "
                       f"{pooled_n} in all): it cannot be shown to be no worse, so the current model stays "
                       "(`shoptag model promote` uses it anyway)")
    what = ", ".join(judged) if judged else "nothing"
    return not reasons, reasons, what


def _pooled(pairs: Sequence[tuple[Outcome, Outcome]], side: int, rows: Sequence[np.ndarray | None]) -> dict[str, float]:
    """The guarded metrics over one or more families, weighted by their held-out labels (`rows`: each family's
    products, None for all of them)."""
    measured = [(pair[side].metrics(r), len(pair[side]) if r is None else len(r)) for pair, r in zip(pairs, rows)]
    total = sum(n for _, n in measured)
    return {metric: sum(m[metric] * n for m, n in measured) / total for metric in GUARDED}


def _worse(name: str, pairs: Sequence[tuple[Outcome, Outcome]], allowed: float, confidence: float) -> list[str]:
    """The reasons the candidate (side 1 of each pair) is worse than the current model (side 0): each guarded
    metric below by more than `allowed`, on the point estimate and in `confidence` of paired resamples of the
    held-out products (each family resampled on its own, the same draw for both models). Resamples are drawn
    only when a point estimate is below, and each is measured once for every metric."""
    point = [None] * len(pairs)
    cur, cand = _pooled(pairs, 0, point), _pooled(pairs, 1, point)
    below = [metric for metric in GUARDED if cand[metric] < cur[metric] - allowed]
    if not below:
        return []
    rng = np.random.default_rng(SEED)
    draws = [[rng.integers(0, len(c), len(c)) for c, _ in pairs] for _ in range(RESAMPLES)]
    resampled = [(_pooled(pairs, 0, d), _pooled(pairs, 1, d)) for d in draws]
    reasons = []
    for metric in below:
        worse = np.mean([b[metric] < a[metric] - allowed for a, b in resampled])
        if worse >= confidence:
            reasons.append(f"{name}: {metric} {cand[metric]:.4f} < current {cur[metric]:.4f} - tolerance {allowed:g} "
                           f"(worse in {worse:.0%} of {RESAMPLES} paired resamples of the held-out products)")
    return reasons
