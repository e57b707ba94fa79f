"""Guarded retraining and the model registry on a real workspace: the guard promotes a candidate that is not
worse, refuses one trained on a careless reviewer's labels (and says why), and promote / rollback switch the
current model atomically without touching what people decided."""

from __future__ import annotations

import json

import numpy as np
import pytest
from service_helpers import build_workspace, service_settings
from typer.testing import CliRunner

from shoptag.cli import app
from shoptag.pipeline.encode import Encoders
from shoptag.pipeline.guard import Outcome, judge
from shoptag.pipeline.registry import list_models
from shoptag.pipeline.tag import tag
from shoptag.pipeline.train import train_if_better
from shoptag.pipeline.workspace import Workspace
from shoptag.tagger.model import current_name
from shoptag.tagger.split import split_of


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    settings = service_settings(tmp_path_factory.mktemp("loop") / "ws")
    settings = settings.model_copy(update={  # a lower target precision: some tags auto-accepted (for the audit)
        "review": settings.review.model_copy(update={"tolerance": 0.05, "guard_min_test": 1}),
        "tagger": settings.tagger.model_copy(update={"target_precision": 0.6})})
    build_workspace(settings, trained=False)
    store = Workspace(settings.workspace).open_store()
    yield settings, store, Encoders(settings.encoders)
    store.close()


def cli(settings, *args: str):
    result = CliRunner().invoke(app, [*args, "--workspace", str(settings.workspace), "--json"],
                                env={"SHOPTAG_CONFIG": ""})
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_guard_promotes_refuses_and_rollback_keeps_people_tags(loop):
    settings, store, encoders = loop
    models = Workspace(settings.workspace).models_dir

    _, first = train_if_better(settings, store, encoders, show_progress=False)
    assert first["guard"]["promoted"] and first["guard"]["against"] is None
    assert first["guard"]["judged"].startswith("nothing: there is no current model")
    _, same = train_if_better(settings, store, encoders, show_progress=False)  # same labels: not worse
    assert same["guard"]["promoted"], same["guard"]["reasons"]
    good = current_name(models)

    # a careless reviewer relabels every training product's category with another product's: a worse candidate
    train_ids = sorted(pid for pid, fams in store.known_tags().items()
                       if "category" in fams and split_of(pid, settings.tagger.validation_fraction,
                                                          settings.tagger.test_fraction) == "train")
    values = [store.known_tags()[pid]["category"] for pid in train_ids]
    store.add_feedback([(pid, "category", values[(i + 7) % len(values)]) for i, pid in enumerate(train_ids)],
                       origin="careless")
    _, worse = train_if_better(settings, store, encoders, show_progress=False)
    guard = worse["guard"]
    assert not guard["promoted"] and any(r.startswith("category: ") for r in guard["reasons"]), guard
    assert current_name(models) == good
    kept = worse["model"].rsplit("/", 1)[-1]
    statuses = {m["name"]: m["status"] for m in cli(settings, "model", "list")}
    assert statuses[kept] == "kept aside" and statuses[good] == "current"
    table = CliRunner().invoke(app, ["model", "list", "--workspace", str(settings.workspace)],
                               env={"SHOPTAG_CONFIG": "", "COLUMNS": "80"})
    assert table.exit_code == 0 and all(name in table.output for name in statuses), table.output  # never cut
    assert "labelled" in table.output and "families" in table.output, table.output  # nor the headers

    # promote it by hand, then roll back: one switch each; people's tags stay through re-tagging
    unlabelled = sorted(set(store.product_ids()) - set(store.known_tags()))[0]
    store.add_feedback([(unlabelled, "category", ["Watches"])], origin="review:ana")
    assert cli(settings, "model", "promote", kept) == {"current": kept}
    tag(settings, store, encoders, show_progress=False)
    assert cli(settings, "model", "rollback") == {"current": good}
    tag(settings, store, encoders, show_progress=False)
    assert [(t.value, t.source) for t in store.tags_of(unlabelled) if t.family == "category"] == [("Watches", "feedback")]
    assert store.known_tags()[train_ids[0]]["category"] == values[7 % len(values)]
    assert store.tags_of(unlabelled) and any(t.source == "model" for t in store.tags_of(unlabelled))  # re-tagged
    assert {m.name: m.status for m in list_models(models)}[kept] == "rolled back"
    assert cli(settings, "model", "rollback") == {"current": first["model"].rsplit("/", 1)[-1]}


def test_review_and_audit_commands(loop):
    settings, store, encoders = loop
    queue = cli(settings, "review", "--limit", "5")
    assert queue["total"] >= len(queue["items"]) > 0
    family = queue["items"][0]["family"]
    only = cli(settings, "review", "--family", family, "--limit", "500")
    assert {i["family"] for i in only["items"]} == {family}
    accepted = sorted({f for f, in store.read("SELECT family FROM tags WHERE source = 'model' AND status = 'accepted'")})
    assert accepted, "the sample model auto-accepted nothing to audit"
    audit = cli(settings, "audit", "--family", accepted[0], "--n", "3")
    assert audit["drawn"]["drawn"] == min(3, audit["drawn"]["population"])
    assert audit["audits"][-1]["measured_precision"] is None
    assert cli(settings, "review", "--limit", "3")["items"][0]["kind"] == "audit"


def test_with_too_few_held_out_labels_to_compare_the_candidate_is_kept_aside(loop):
    settings, store, encoders = loop
    models = Workspace(settings.workspace).models_dir
    before = current_name(models)
    strict = settings.model_copy(update={"review": settings.review.model_copy(update={"guard_min_test": 100_000})})
    _, summary = train_if_better(strict, store, encoders, show_progress=False)
    guard = summary["guard"]
    assert not guard["promoted"] and guard["judged"] == "nothing" and current_name(models) == before
    assert guard["reasons"][-1].startswith("no family has enough held-out labels to compare (need 100000")


def _outcome(n: int, right: int, covered: int) -> Outcome:
    """A single-valued family's outcome on `n` held-out products: `right` guessed right, the first `covered`
    tagged at the target precision."""
    truth = np.arange(n) % 3
    guess = np.where(np.arange(n) < right, truth, (truth + 1) % 3)
    emitted = (np.arange(n) < covered).astype(int)
    return Outcome(truth, guess, emitted, emitted * (guess == truth))


def test_the_guard_judges_small_families_together_and_refuses_a_worse_candidate():
    current = {"colour": _outcome(30, 24, 15), "season": _outcome(12, 7, 5), "usage": _outcome(10, 7, 3)}
    same = dict(current)
    assert judge(current, same, 0.01, {}, 20, 0.9) == (True, [], "colour, 2 families pooled (22 labels)")
    worse = {**same, "season": _outcome(12, 1, 5)}  # alone too small to judge
    promote, reasons, _ = judge(current, worse, 0.01, {}, 20, 0.9)
    assert not promote and len(reasons) == 1, reasons
    assert reasons[0].startswith("2 families pooled: f1_weighted 0.3586 < current 0.6342 - tolerance 0.01 (worse in 100% ")
    assert judge(current, worse, 0.6, {}, 20, 0.9)[0]  # within a looser tolerance
    assert not judge(current, {**same, "colour": _outcome(30, 24, 5)}, 0.01, {}, 20, 0.9)[0]  # coverage 0.5 -> 0.17
    promote, reasons, what = judge(current, same, 0.01, {}, 60, 0.9)  # pooled 22 < 60: nothing can be compared
    assert (promote, what) == (False, "nothing") and reasons[0].startswith("no family has enough held-out labels")


def test_one_product_of_twenty_is_noise_to_the_guard_and_a_clear_drop_is_not():
    current = {"colour": _outcome(21, 17, 10)}
    one_less = {"colour": _outcome(21, 16, 10)}  # weighted F1 0.81 -> 0.76 on one product: not shown worse
    assert judge(current, one_less, 0.01, {}, 20, 0.9) == (True, [], "colour")
    assert not judge(current, one_less, 0.01, {}, 20, 0.01)[0]  # with no confidence asked, the point estimate rules
    eight_less = {"colour": _outcome(21, 9, 10)}
    promote, reasons, _ = judge(current, eight_less, 0.01, {}, 20, 0.9)
    assert not promote and reasons[0].startswith("colour: f1_weighted"), reasons
