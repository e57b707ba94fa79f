"""What `evaluate` says about the accepted tags' precision: a verdict and a sentence, never "nan (MISSED)"."""

from __future__ import annotations

import math

import numpy as np
import pytest
from shoptag.pipeline.evaluate import precision_note, precision_verdict


def _family(verdict: dict, test_size: int = 40) -> dict:
    return {"target_precision": 0.9, "test_size": test_size, **verdict}


@pytest.mark.parametrize(
    "emitted, precision, validation_n, verdict, meets",
    [
        (30, 0.95, 500, "met", True),
        (30, 0.85, 500, "missed", False),
        (0, math.nan, 9, "too few labels", None),  # 9 < 25: no threshold could be certified
        (0, math.nan, 500, "nothing accepted", None),
    ],
)
def test_verdicts(emitted, precision, validation_n, verdict, meets):
    out = precision_verdict({"n_emitted_at_target": emitted, "precision_at_target": precision}, validation_n, 0.9, 0.95)
    assert out["precision_verdict"] == verdict and out["meets_target"] is meets
    assert out["fewest_to_certify"] == 25 and out["accepted_tags"] == emitted
    assert (out["accepted_precision"] is None) == (emitted == 0)  # no "nan" in the JSON either
    note = precision_note("colour", _family(out), 0.95)
    assert "nan" not in note and note.startswith("colour: ")


def test_the_too_few_labels_sentence_says_how_many_and_what_to_do():
    out = precision_verdict({"n_emitted_at_target": 0, "precision_at_target": math.nan}, 9, 0.9, 0.95)
    note = precision_note("category", _family(out, test_size=5), 0.95)
    assert "too few held-out labels to certify precision 0.9" in note
    assert "validation n=9, test n=5" in note and "25 right answers" in note and "label more" in note
    missed = precision_verdict({"n_emitted_at_target": 12, "precision_at_target": 0.75}, 300, 0.9, 0.95)
    assert "MISSED" in precision_note("category", _family(missed), 0.95)


def test_explain_says_why_a_model_tag_waits_for_review(trained_sample):
    """Every tag the model leaves to review says why: below its threshold, or no certified threshold at all
    (the 49-label sample: too few validation labels for 0.9 at 95 % confidence)."""
    from shoptag.pipeline.explain import explain

    _, store, _ = trained_sample
    reasons = []
    for pid in ("sp-008", "sp-019", "sp-028"):
        for tags in explain(store, pid)["tags"].values():
            for t in tags:
                if t["status"] == "review" and t["source"] == "model":
                    threshold = t["evidence"]["threshold"]
                    expected = "no threshold is certified" if threshold is None else "below this tag's threshold"
                    assert expected in t["why"], t
                    reasons.append(t["why"])
    assert reasons


def test_train_names_the_families_where_nothing_can_be_accepted_yet(trained_sample):
    """The 49-label sample: the train summary says which families accept nothing and how many right answers a
    threshold needs, instead of a bare "never emitted" count."""
    from shoptag.pipeline.train import review_only
    from shoptag.pipeline.workspace import Workspace
    from shoptag.tagger.model import load_model

    settings, _, _ = trained_sample
    model = load_model(Workspace(settings.workspace).models_dir)
    stuck = review_only(model, settings)
    never = {f for f, fm in model.families.items() if not np.isfinite(fm.thresholds).any()}
    assert never, "the sample is too small for a certified threshold: every family should be review-only"
    assert set(stuck["families"]) == never and all(0 < n <= 49 for n in stuck["families"].values())
    assert "at least 25 right answers" in stuck["why"] and "label more products" in stuck["why"]
    lenient = settings.model_copy(update={"tagger": settings.tagger.model_copy(update={"precision_confidence": 0.0})})
    assert "at least 1 right answers" in review_only(model, lenient)["why"]
