""""No value applies" is a label: an empty list in the catalog or in feedback trains the model (a negative for
every tag of a multi-valued family) and is never overwritten; held-out labels are scored by `evaluate`;
ingest warns when an English-only encoder meets a Chinese catalog."""

from __future__ import annotations

import json
import random

import pytest

from shoptag.pipeline.encode import Encoders
from shoptag.pipeline.evaluate import evaluate, unscored_notes
from shoptag.pipeline.ingest import ingest
from shoptag.core.settings import Settings
from shoptag.pipeline.tag import tag
from shoptag.pipeline.train import labelled_set, train
from shoptag.pipeline.workspace import Workspace
from shoptag.tagger.language import encoder_warning

ARTICLES = {"Shirts": "shirt", "Jeans": "jeans", "Dresses": "dress", "Sneakers": "sneakers"}
BRANDS = ("Acme", "Zenith")
WORDS = ("classic", "slim", "summer", "soft", "cotton", "casual", "light", "everyday", "modern", "basic")


def _record(i: int, rng: random.Random, labelled: bool) -> dict:
    category = list(ARTICLES)[i % 4]
    brands = [b for b, on in zip(BRANDS, (i % 3 == 0, i % 5 == 0)) if on]  # about half have no brand
    title = " ".join([*brands, *rng.sample(WORDS, 3), ARTICLES[category], f"no{i}"])
    record = {"id": f"p{i:03d}", "title": title}
    if labelled:
        record["tags"] = {"category": [category], "brand": brands}  # brand [] : no brand applies
    return record


@pytest.fixture(scope="module")
def brands_workspace(tmp_path_factory):
    rng = random.Random(5)
    tmp = tmp_path_factory.mktemp("none-applies")
    records = [_record(i, rng, labelled=i < 300) for i in range(360)]
    catalog = tmp / "catalog.jsonl"
    catalog.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    settings = Settings(workspace=tmp / "ws", encoders={"text_model": "use-multilingual"})
    store = Workspace(settings.workspace).open_store()
    encoders = Encoders(settings.encoders)
    ingest(settings, store, catalog, show_progress=False)
    train(settings, store, encoders, show_progress=False)
    tag(settings, store, encoders, None, show_progress=False)
    yield settings, store, encoders, records
    store.close()


def test_an_empty_list_in_the_catalog_is_a_label(brands_workspace):
    settings, store, encoders, records = brands_workspace
    unbranded = [r["id"] for r in records[:300] if not r["tags"]["brand"]]
    known = store.known_tags()
    assert all(known[pid]["brand"] == [] for pid in unbranded)
    data = labelled_set(store, encoders, Workspace(settings.workspace), show_progress=False)
    assert set(unbranded) <= set(data.ids)
    # never overwritten: the model writes no brand over "none applies"
    assert all(t.family != "brand" for pid in unbranded for t in store.tags_of(pid))


def test_the_model_learns_that_no_brand_applies(brands_workspace):
    _, store, _, records = brands_workspace
    new = records[300:]
    wrongly_branded = 0
    for r in new:
        accepted = {t.value for t in store.tags_of(r["id"]) if t.family == "brand" and t.status == "accepted"}
        truth = {b for b in BRANDS if r["title"].startswith(b) or f" {b} " in f" {r['title']} "}
        wrongly_branded += bool(accepted - truth)
    assert wrongly_branded <= 2, f"{wrongly_branded} of {len(new)} new products got a brand they do not have"


def test_feedback_saying_none_applies_becomes_a_label(brands_workspace, tmp_path):
    settings, store, encoders, records = brands_workspace
    pid = records[0]["id"]  # labelled Acme in the catalog
    store.add_feedback([(pid, "brand", [])], origin="test")
    try:
        assert store.known_tags()[pid]["brand"] == []
        data = labelled_set(store, encoders, Workspace(settings.workspace), show_progress=False)
        assert data.tags[data.ids.index(pid)]["brand"] == []
    finally:
        store.add_feedback([(pid, "brand", ["Acme"])], origin="test")


def test_evaluate_scores_the_labels_a_user_holds_out(brands_workspace, tmp_path):
    settings, store, encoders, records = brands_workspace
    held = records[300:340]  # unlabelled in the store; the user knows their tags
    labels = tmp_path / "held-out.jsonl"
    rows = [{"id": r["id"], "tags": _record(int(r["id"][1:]), random.Random(0), True)["tags"]} for r in held]
    for row in rows[:3]:  # labels the model cannot score: a family it does not learn, a value it never learnt
        row["tags"] |= {"material": ["denim"], "brand": [*row["tags"]["brand"], "Spacesuit Co"]}
    labels.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    results = evaluate(settings, store, encoders, labels=labels, show_progress=False)
    assert results["split"]["test"] == 40 and results["split_groups"]["kind"] == "held-out labels"
    category = results["families"]["category"]
    assert category["test_size"] == 40
    assert category["methods"]["fused"]["f1_weighted"] > 0.9
    assert {b["bucket"] for b in category["methods"]["fused"]["buckets"]} == {"1-5", "6-20", "21-100", "100+"}
    assert category["precision_verdict"] in ("met", "nothing accepted"), category  # 40 labels are enough to judge
    assert category["accepted_tags"] == 0 or category["accepted_precision"] >= 0.9
    # said, not dropped without a word
    assert results["held_out_unlearnt_families"] == {"material": 3}
    assert unscored_notes(results) == [
        "material: not a family the model learns; its labels on 3 held-out products are not scored",
        "brand: 3 held-out label values the model never learnt, not scored (no method can emit them)",
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "p300", "tags": {"category": ["Shirts"]}}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        evaluate(settings, store, encoders, labels=bad, show_progress=False)


def test_an_english_only_encoder_on_a_chinese_catalog_gets_a_warning(tmp_path):
    catalog = tmp_path / "zh.jsonl"
    titles = ["男士修身牛仔裤", "女士连衣裙 夏季", "white sneakers", "纯棉T恤"]
    catalog.write_text("\n".join(json.dumps({"id": str(i), "title": t}, ensure_ascii=False) for i, t in enumerate(titles)),
                       encoding="utf-8")
    settings = Settings(workspace=tmp_path / "ws", encoders={"text_model": "minilm"})
    store = Workspace(settings.workspace).open_store()
    try:
        report = ingest(settings, store, catalog, show_progress=False)
    finally:
        store.close()
    assert report.cjk_products == 3 and len(report.warnings) == 1 and "use-multilingual" in report.warnings[0]
    warning = encoder_warning("minilm", 80, 100)
    assert warning and "use-multilingual" in warning and "e5-small" in warning
    assert encoder_warning("use-multilingual", 80, 100) is None
    assert encoder_warning("minilm", 20, 100) is None
