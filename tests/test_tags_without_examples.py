"""End to end: a catalog with no labels but a taxonomy, zero-shot tags that train once reviewed, hierarchy
decisions on the fashion levels, rules in `explain`, and `suggest-tags` from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_models import SAMPLE
from typer.testing import CliRunner

from shoptag.cli import app
from shoptag.pipeline.encode import Encoders
from shoptag.pipeline.explain import explain
from shoptag.pipeline.ingest import ingest
from shoptag.core.settings import Settings
from shoptag.pipeline.tag import tag
from shoptag.pipeline.train import train
from shoptag.pipeline.workspace import Workspace
from shoptag.tagger.split import unit_hash
from shoptag.taxonomy.paths import inconsistent, path_columns

TAXONOMY = """\
服装 > 牛仔裤 | Jeans, denim pants
服装 > 连衣裙 | dress
服装 > T恤 | T-Shirt, tee
服装 > 衬衫 | shirt
配饰 > 手表 | watch
配饰 > 双肩包 | backpack, rucksack
鞋 > 运动鞋 | sneakers, running shoes
"""
TRUE_CATEGORY = {"Jeans": "牛仔裤", "Dresses": "连衣裙", "T-Shirts": "T恤", "Shirts": "衬衫", "Watches": "手表",
                 "Backpacks": "双肩包", "Sneakers": "运动鞋"}
RULES = 'title contains "儿童" -> audience: kids\nnever department=鞋 when category=手表\n'


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory) -> tuple[Settings, object, dict[str, str]]:
    """The bilingual sample without any tag, a two-level taxonomy in Chinese (English synonyms), and rules."""
    root = tmp_path_factory.mktemp("zero-label")
    records = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    truth = {r["id"]: TRUE_CATEGORY[r["tags"]["category"][0]] for r in records if r.get("tags", {}).get("category")}
    catalog = root / "catalog.jsonl"
    catalog.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("tags", "image")}, ensure_ascii=False) + "\n"
                               for r in records), encoding="utf-8")
    (root / "taxonomy.txt").write_text(TAXONOMY, encoding="utf-8")
    (root / "rules.txt").write_text(RULES, encoding="utf-8")
    # 70 products: too few for a confidence bound on precision, the point estimate decides the thresholds
    settings = Settings(workspace=root / "ws", encoders={"text_model": "use-multilingual"},
                        tagger={"precision_confidence": 0.0}, taxonomy={
        "file": root / "taxonomy.txt", "levels": ["department", "category"], "rules": root / "rules.txt", "min_reviewed": 2})
    store = Workspace(settings.workspace).open_store()
    ingest(settings, store, catalog, show_progress=False)
    yield settings, store, truth
    store.close()


@pytest.mark.slow
def test_zero_labels_with_a_taxonomy_trains_says_so_and_tags_for_review(unlabelled) -> None:
    settings, store, truth = unlabelled
    encoders = Encoders(settings.encoders)
    model, summary = train(settings, store, encoders, show_progress=False)
    assert model is None and summary["labelled"] == 0 and summary["model"] is None
    assert set(summary["zero_shot"]) == {"department", "category"}
    assert summary["taxonomy"]["levels"] == {"department": 3, "category": 7}
    assert [r["line"] for r in summary["rules"]] == [1, 2]
    report = tag(settings, store, encoders, None, show_progress=False)
    assert report.tagged == 70 and report.by_family["category"] == {"accepted": 0, "review": 70}
    tags = store.effective_tags()
    assert all(f != "category" for families in tags.values() for f in families)  # nothing zero-shot is live
    got = {pid: [t for t in store.tags_of(pid) if t.family == "category"][0].value for pid in truth}
    assert sum(got[p] == truth[p] for p in truth) / len(truth) >= 0.8
    # the two levels always form a path of the taxonomy
    columns = path_columns([["服装", "牛仔裤"], ["服装", "连衣裙"], ["服装", "T恤"], ["服装", "衬衫"], ["配饰", "手表"],
                            ["配饰", "双肩包"], ["鞋", "运动鞋"]], [["服装", "配饰", "鞋"], list(TRUE_CATEGORY.values())])
    for pid in truth:
        by = {t.family: t.value for t in store.tags_of(pid)}
        row = [["服装", "配饰", "鞋"].index(by["department"]), list(TRUE_CATEGORY.values()).index(by["category"])]
        assert not inconsistent(__import__("numpy").array([row]), columns).any()
    why = explain(store, "sp-001")["tags"]["category"][0]
    assert why["status"] == "review" and why["evidence"]["zero_shot"]["named_in_text"] is True
    assert why["evidence"]["path"] == "服装 > 牛仔裤" and why["why"].startswith("zero-shot")
    # the add rule fires on the kids' products and is live (a person wrote it)
    for p in store.products():
        audience = explain(store, p.id)["tags"].get("audience")
        if "儿童" in p.title:
            assert audience[0]["status"] == "accepted" and audience[0]["why"].startswith("rule on line 1")
        else:
            assert audience is None


@pytest.mark.slow
def test_products_posted_to_the_service_get_the_tag_system_as_the_cli_gives_it(unlabelled) -> None:
    """POST /products runs the stage `shoptag tag` runs: zero-shot candidates, one path over the levels, rules
    (a workspace with no labels has no learnt model, only the tag system: the service tags with that)."""
    from fastapi.testclient import TestClient

    from shoptag.pipeline.tag_system import load_tag_system
    from shoptag.service.app import create_app

    settings, store, _ = unlabelled
    if load_tag_system(Workspace(settings.workspace).models_dir) is None:  # run alone: train as the test above
        train(settings, store, Encoders(settings.encoders), show_progress=False)
    with TestClient(create_app(settings)) as client:
        response = client.post("/products", json={"id": "posted-1", "title": "儿童牛仔裤 蓝色 弹力"})
    assert response.status_code == 200, response.text
    tags = {t.family: t for t in store.tags_of("posted-1")}
    assert (tags["audience"].value, tags["audience"].status, tags["audience"].source) == ("kids", "accepted", "model")
    assert tags["category"].status == "review" and "zero_shot" in tags["category"].evidence
    assert (tags["department"].value, tags["category"].value) == ("服装", "牛仔裤")  # a path of the taxonomy
    assert tags["category"].evidence["path"] == "服装 > 牛仔裤"
    store.delete_products(["posted-1"])


@pytest.mark.slow
def test_reviewed_examples_make_the_family_train_and_children_imply_parents(unlabelled) -> None:
    settings, store, truth = unlabelled
    encoders = Encoders(settings.encoders)
    reviewed = sorted(truth, key=lambda p: unit_hash(p, "review"))
    per_value: dict[str, list[str]] = {}
    for pid in reviewed:
        if len(per_value.setdefault(truth[pid], [])) < 5:
            per_value[truth[pid]].append(pid)
    store.add_feedback([(pid, "category", [v]) for v, pids in per_value.items() for pid in pids], "test")
    _, summary = train(settings, store, encoders, show_progress=False)
    assert summary["trained_from_reviewed_examples"] == ["category"] and "category" in summary["families"]
    assert set(summary["zero_shot"]) == {"department"}
    tag(settings, store, encoders, None, show_progress=False, retag_all=True)
    derived = []
    for pid in set(truth) - {p for ps in per_value.values() for p in ps}:
        tags = {t.family: t for t in store.tags_of(pid)}
        if tags["category"].status == "accepted":
            assert tags["department"].status == "accepted" and tags["department"].evidence["derived_from"].startswith("category=")
            derived.append(pid)
    assert explain(store, derived[0])["tags"]["department"][0]["why"].startswith("derived: category=")
    assert derived  # the trained family is confident somewhere, and its parent follows
    # `shoptag explain` prints tags the tag system made (a rule's, a derived one) with their reason
    kids = next(p.id for p in store.products() if "儿童" in p.title)
    for pid, expected in ((derived[0], ["(model, derived)", "derived: category="]), (kids, ["rule on line 1"])):
        result = CliRunner().invoke(app, ["explain", pid, "--workspace", str(settings.workspace)],
                                    env={"SHOPTAG_CONFIG": ""})
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        assert all(e in text for e in expected), text


@pytest.mark.slow
@pytest.mark.data
def test_fashion_levels_decided_as_one_path(fashion_slice, tmp_path) -> None:
    """masterCategory > subCategory > articleType learnt from the labels of the first 800 products (embedding
    sources only, to stay quick); 30% of them unlabelled and tagged."""
    levels = ["masterCategory", "subCategory", "articleType"]
    catalog = tmp_path / "catalog.jsonl"
    hidden = set()
    with catalog.open("w", encoding="utf-8") as fh:
        for r in fashion_slice.records[:800]:
            r = {**r, "tags": {f: v for f, v in r["tags"].items() if f in levels}}
            if unit_hash(r["id"], "hide") < 0.3:
                hidden.add(r["id"])
                r["tags"] = {}
            fh.write(json.dumps(r) + "\n")
    settings = Settings(workspace=tmp_path / "ws", taxonomy={"levels": levels}, tagger={"lexical": False, "head_epochs": 20})
    store = Workspace(settings.workspace).open_store()
    encoders = Encoders(settings.encoders)
    ingest(settings, store, catalog, show_progress=False)
    _, summary = train(settings, store, encoders, show_progress=False)
    assert summary["taxonomy"]["from"] == "labels" and summary["taxonomy"]["paths"] > 30
    tag(settings, store, encoders, None, show_progress=False)
    paths = {tuple(r["tags"][lvl][0] for lvl in levels) for r in fashion_slice.records[:800]
             if r["id"] not in hidden and all(lvl in r["tags"] for lvl in levels)}
    tags = store.effective_tags(sorted(hidden))
    accepted_paths = [tuple((tags.get(pid, {}).get(lvl) or [("", "", 0)])[0][0] for lvl in levels) for pid in hidden]
    for path in accepted_paths:
        emitted = [v for v in path if v]
        assert any(all(not v or v == p[k] for k, v in enumerate(path)) for p in paths), path
        assert emitted == list(path[: len(emitted)])  # a child is never emitted without its ancestors
    assert sum(all(p) for p in accepted_paths) > 0.3 * len(hidden)  # not vacuous: many full paths emitted
    assert all("path" in (t.evidence or {}) for pid in sorted(hidden)[:20] for t in store.tags_of(pid))
    store.close()


@pytest.mark.slow
def test_suggest_tags_and_rules_from_the_cli(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"SHOPTAG_WORKSPACE": str(tmp_path / "ws"), "SHOPTAG_ENCODERS__TEXT_MODEL": "use-multilingual"}
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(SAMPLE)], env=env).exit_code == 0
    result = runner.invoke(app, ["suggest-tags", "--min-products", "3", "--json"], env=env)
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found and all(s["products"] >= 3 and s["value"].casefold() not in {"jeans", "watches"} for s in found)
    assert runner.invoke(app, ["suggest-tags", "--accept", "1"], env=env).exit_code == 2  # needs --family
    result = runner.invoke(app, ["suggest-tags", "--accept", "1", "--family", "theme", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accepted"][0]["value"] == found[0]["value"]
    assert (tmp_path / "ws" / "tags.txt").read_text(encoding="utf-8").startswith(f"theme: {found[0]['value']}")
    again = runner.invoke(app, ["suggest-tags", "--accept", "1", "--family", "theme"], env=env)
    assert again.exit_code not in (0, 3) and "already declared" in again.output  # accepted once only
    (tmp_path / "rules.txt").write_text('title contains "牛仔" -> category: Jeans\n', encoding="utf-8")
    result = runner.invoke(app, ["rules", "--json"], env={**env, "SHOPTAG_TAXONOMY__RULES": str(tmp_path / "rules.txt")})
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)
    assert report["fired_on_labelled"] >= 3 and report["precision"] == 1.0


@pytest.mark.slow
def test_zero_shot_from_photos_with_the_clip_tower(tiny_run, tmp_path) -> None:
    """Shape photos whose titles say nothing ("item 7"): a zero-shot colour family can only be read from the
    photo, through the CLIP text tower's vectors of the colour names."""
    from fixtures_clip import make_shape_pairs

    lines, truth = [], {}
    for n, (png, title) in enumerate(make_shape_pairs(5, seed=7)):
        (tmp_path / f"{n}.png").write_bytes(png)
        truth[f"s{n}"] = title.split()[0]
        lines.append(json.dumps({"id": f"s{n}", "title": f"item {n}", "image": str(tmp_path / f"{n}.png")}))
    (tmp_path / "catalog.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "colours.txt").write_text("red\ngreen\nblue\nyellow\n")
    settings = Settings(
        workspace=tmp_path / "ws", taxonomy={"file": tmp_path / "colours.txt", "levels": ["colour"]},
        encoders={"image_model": "shoptag-tiny", "image_checkpoint": str(tiny_run.report.model_path), "device": "cpu",
                  "image_weight": 0.8})
    store = Workspace(settings.workspace).open_store()
    encoders = Encoders(settings.encoders)
    ingest(settings, store, tmp_path / "catalog.jsonl", show_progress=False)
    _, summary = train(settings, store, encoders, show_progress=False)
    assert set(summary["zero_shot"]) == {"colour"}
    tag(settings, store, encoders, None, show_progress=False)
    got = {pid: [t for t in store.tags_of(pid) if t.family == "colour"][0] for pid in truth}
    assert all(t.status == "review" and t.evidence["modality"] == "text+image" for t in got.values())
    assert sum(got[p].value == truth[p] for p in truth) / len(truth) >= 0.6  # chance: 0.25
    store.close()
