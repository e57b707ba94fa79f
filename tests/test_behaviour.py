"""Shopper behaviour: events in (idempotent, rejects with lines, pseudonymised), co-engagement and personal
recommendations with their fallbacks, on a slice of the real UCI Online Retail II log, plus the pure scoring."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import scipy.sparse as sp

from shoptag.behaviour import cooccur, demand, offline_eval
from shoptag.behaviour.events import EVENT_TYPES
from shoptag.behaviour.recommend import rerank, top_k
from shoptag.core.errors import NotFound
from shoptag.core.settings import load_settings
from shoptag.pipeline import derived_tags
from shoptag.pipeline import recommend as recs
from shoptag.pipeline.datasets import behaviour_events, default_data_dir
from shoptag.pipeline.explain import explain
from shoptag.pipeline.review import DecisionIn, bulk_targets, decide, queue
from shoptag.service.schemas import ProductOut
from shoptag.store.review_log import open_review_log
from shoptag.pipeline.encode import Encoders
from shoptag.pipeline.events import append_events, ingest_events, open_event_log
from shoptag.pipeline.ingest import ingest
from shoptag.pipeline.workspace import Workspace


def expected_rejects(rows: list[dict], catalog_ids: set[str]) -> dict[int, str]:
    """line → why, computed from the raw CSV rows independently of the reader."""
    bad = {}
    for i, row in enumerate(rows):
        if row["event_type"] not in EVENT_TYPES:
            bad[i + 2] = "unknown event type"
        elif row["item_id"] not in catalog_ids:
            bad[i + 2] = "unknown item"
    return bad


def test_real_events_ingest_is_idempotent_with_rejects_by_line(behaviour_slice, behaviour_workspace):
    settings, store = behaviour_workspace
    expected = expected_rejects(behaviour_slice.rows, behaviour_slice.catalog_ids)
    assert expected, "the slice should hold adjustment lines and untitled items"
    report = ingest_events(settings, store, behaviour_slice.events)
    assert report.read == len(behaviour_slice.rows)
    assert report.rejected == len(expected)
    # exact duplicate lines of the source are kept: they are separate purchases as far as anyone can tell
    assert report.added == report.read - report.rejected
    lines = [json.loads(x) for x in Path(report.rejects_file).read_text().splitlines()]
    assert {r["line"]: r["reason"].split(" (")[0].split(" '")[0] for r in lines} == expected
    assert report.ignored_columns == ["country", "is_product", "title"]

    again = ingest_events(settings, store, behaviour_slice.events)
    assert (again.added, again.duplicates, again.rejected) == (0, report.added, report.rejected)
    log = open_event_log(settings)
    try:
        assert log.store.count() == report.added
    finally:
        log.close()


def test_no_raw_user_id_is_stored(behaviour_slice, built):
    settings = built[0]
    catalog_text = behaviour_slice.catalog.read_text(encoding="utf-8")
    users = {r["user_id"] for r in behaviour_slice.rows if r["user_id"]} - {""}
    users = {u for u in users if u not in catalog_text}  # an id that is also a product code proves nothing
    assert len(users) > 20
    # an id leaks where it stands alone (no letter or digit either side): for digit ids that is a digit run
    # of the file equal to it, so one pass per file finds them all (a search per id took minutes)
    assert all(u.isdigit() for u in users)
    alone = re.compile(rb"(?<![0-9A-Za-z])[0-9]+(?![0-9A-Za-z])")
    wanted = {u.encode() for u in users}
    for path in Path(settings.workspace).rglob("*"):
        if path.is_file():
            leaked = wanted & set(alone.findall(path.read_bytes()))
            assert not leaked, f"{path.name} holds raw user ids {sorted(leaked)[:3]}"
    with sqlite3.connect(Workspace(settings.workspace).events_path) as db:  # not as integers either
        marks = ",".join("?" * len(users))
        assert db.execute(f"SELECT COUNT(*) FROM events WHERE user IN ({marks})", [int(u) for u in users]).fetchone()[0] == 0
        assert db.execute("SELECT COUNT(DISTINCT user) FROM events").fetchone()[0] >= len(users)


def test_bad_events_are_rejected_and_the_rest_go_in(behaviour_workspace, tmp_path):
    settings, store = behaviour_workspace
    item = store.product_ids()[0]
    good = {"time": "2024-05-01 12:00:00", "type": "purchase", "user": "u1", "session": "s1", "item": item}
    lines = [
        json.dumps(good),
        json.dumps({**good, "time": "yesterday"}),
        json.dumps({**good, "type": "wishlist"}),
        json.dumps({**good, "item": "NO-SUCH-ITEM"}),
        "{not json",
        "[" * 5000 + "]" * 5000,
        "",
        json.dumps({"time": "2024-05-01T12:01:00Z", "type": "search", "user": "u1", "query": "teapot"}),
        json.dumps({"time": "2024-05-01T12:02:00Z", "type": "search", "user": "u1"}),
        json.dumps({**good, "quantity": "many"}),
        json.dumps({**good, "time": 1714565000, "country": "UK"}),
        json.dumps({**good, "time": "2999-01-01 00:00:00"}),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = ingest_events(settings, store, path)
    assert (report.read, report.added, report.rejected) == (11, 3, 8)
    reasons = {r["line"]: r["reason"] for r in report.rejects}
    assert set(reasons) == {2, 3, 4, 5, 6, 9, 10, 12} and reasons[12].startswith("time in the future")
    assert reasons[2].startswith("bad time") and "wishlist" in reasons[3] and "NO-SUCH-ITEM" in reasons[4]
    assert "search event without a query" in reasons[9] and "quantity" in reasons[10]
    assert report.ignored_columns == ["country"]


def test_csv_lines_stay_exact_around_malformed_and_blank_rows(behaviour_workspace, tmp_path):
    settings, store = behaviour_workspace
    item = store.product_ids()[0]
    path = tmp_path / "events.csv"
    path.write_text(f"time,type,user,item\n2024-05-01,view,u1,{item}\ntoo,many,cells,here,x\n\n"
                    f"2024-05-01,view,u2,{item}\n2024-05-01,jump,u3,{item}\n")
    report = ingest_events(settings, store, path)
    assert (report.added, report.rejected) == (2, 3)
    assert [(r["line"], r["reason"][:8]) for r in report.rejects] == [(3, "expected"), (4, "empty li"),
                                                                      (6, "unknown ")]


def test_an_unclosed_quote_is_one_reject_and_the_lines_after_it_go_in(behaviour_workspace, tmp_path):
    settings, store = behaviour_workspace
    item = store.product_ids()[0]
    path = tmp_path / "events.csv"
    path.write_text(f'time,type,user,item,query\n2024-05-01,view,u1,{item},\n2024-05-01,view,"u2,{item},\n'
                    f'2024-05-01,view,u3,{item},\n2024-05-01,search,u4,,"12"" ruler"\n2024-05-01,view,u5,{item},x"y\n'
                    f'2024-05-01,view,u6,{item},\n')
    report = ingest_events(settings, store, path)
    assert (report.read, report.added, report.rejected) == (6, 5, 1)
    assert report.rejects[0]["line"] == 3 and report.rejects[0]["reason"].startswith("unclosed quote")
    gz = tmp_path / "events.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes().replace(b"view,u", b"cart,u")))
    again = ingest_events(settings, store, gz)
    assert (again.added, again.rejected, again.rejects[0]["line"]) == (5, 1, 3)


def test_api_batches_share_the_rules_and_retries_are_idempotent(behaviour_workspace):
    settings, store = behaviour_workspace
    item = store.product_ids()[0]
    batch = [{"time": "2024-05-01 12:00:00", "type": "view", "user": "u9", "item": item},
             {"time": "2024-05-01 12:00:00", "type": "view", "user": "u9", "item": item},  # a second, identical view
             {"time": "bad", "type": "view", "user": "u9", "item": item}]
    first = append_events(settings, store, batch)
    assert (first.added, first.rejected, first.rejects[0]["line"]) == (2, 1, 3)
    assert append_events(settings, store, batch).added == 0  # a client retrying the same batch adds nothing


def test_retention_keeps_a_window_behind_the_newest_event(behaviour_workspace):
    settings, store = behaviour_workspace
    item = store.product_ids()[0]
    settings = settings.model_copy(update={"behaviour": settings.behaviour.model_copy(update={"retention_days": 30})})
    old = {"time": "2024-01-01 00:00:00", "type": "purchase", "user": "a", "item": item}
    new = {"time": "2024-03-01 00:00:00", "type": "purchase", "user": "a", "item": item}
    assert append_events(settings, store, [old]).expired == 0
    report = append_events(settings, store, [new])
    assert report.expired == 1


@pytest.fixture(scope="module")
def built(behaviour_slice, tmp_path_factory):
    """One workspace with the slice's catalog and events and a built model, shared by the read-mostly tests
    (encoding the catalog is the slow part)."""
    settings = load_settings(None, workspace=tmp_path_factory.mktemp("recs") / "ws")
    store = Workspace(settings.workspace).open_store()
    ingest(settings, store, behaviour_slice.catalog, show_progress=False)
    ingest_events(settings, store, behaviour_slice.events)
    encoders = Encoders(settings.encoders)
    log = open_event_log(settings)
    yield settings, store, log, recs.build(settings, store, encoders, log)
    log.close()
    store.close()


def test_recommendations_for_known_unknown_and_cold(built, behaviour_slice):
    settings, store, log, model = built
    buyer = next(r["user_id"] for r in behaviour_slice.rows if r["user_id"] and r["event_type"] == "purchase")
    items, known = recs.recommend(settings, model, log, buyer, 10)
    assert known and len(items) == 10
    bought = {r["item_id"] for r in behaviour_slice.rows if r["user_id"] == buyer}
    assert {i.id for i in items if i.reason == "repeat"} <= bought

    popular, known = recs.recommend(settings, model, log, "never-seen-user", 5)
    assert not known and [i.reason for i in popular] == ["popular"] * 5
    assert popular[0].id == model.item_ids[int(np.argmax(model.popularity))]

    seen = {r["item_id"] for r in behaviour_slice.rows}
    cold = next(pid for pid in model.item_ids.tolist() if pid not in seen)
    assert recs.similar(model, cold, 5, "behaviour", 0.7) == []  # no history: nothing bought with it
    blended = recs.similar(model, cold, 5, "blend", 0.7)
    assert len(blended) == 5 and {h.reason for h in blended} == {"content"} and cold not in {h.id for h in blended}
    hot = model.item_ids[int(np.argmax(model.popularity))]
    assert {h.reason for h in recs.similar(model, hot, 5, "blend", 0.7)} == {"blend"}
    with pytest.raises(NotFound):
        recs.similar(model, "NO-SUCH-ITEM", 5, "blend", 0.7)


def test_k_items_come_back_however_sparse_popularity_is_and_a_bad_context_is_an_error(built):
    settings, store, log, model = built
    sparse = model.popularity.copy()
    sparse[np.argsort(-sparse)[2:]] = 0.0  # only two products ever sold
    thin = dataclasses.replace(model, popularity=sparse, _position=None)
    items, known = recs.recommend(settings, thin, log, "never-seen-user", 6)
    assert not known and len({i.id for i in items}) == 6
    assert [i.reason for i in items] == ["popular"] * 2 + ["catalog"] * 4
    hot = model.item_ids[int(np.argmax(model.popularity))]
    around, _ = recs.recommend(settings, thin, log, "never-seen-user", 300, context=hot)
    assert len({i.id for i in around}) == 300 and hot not in {i.id for i in around}
    with pytest.raises(NotFound, match="NO-SUCH-ITEM"):
        recs.recommend(settings, model, log, "never-seen-user", 5, context="NO-SUCH-ITEM")


def test_a_new_event_shows_in_recommendations_without_a_rebuild(built):
    settings, store, log, model = built
    hot = int(np.argmax(np.diff(model.similarity.indptr)))  # the item with the most co-engaged neighbours
    item = model.item_ids[hot]
    before, known = recs.recommend(settings, model, log, "fresh-user", 10)
    assert not known
    append_events(settings, store, [{"time": "2010-01-01 10:00:00", "type": "purchase", "user": "fresh-user",
                                     "item": item}])
    after, known = recs.recommend(settings, model, log, "fresh-user", 10)
    assert known
    neighbours = set(model.item_ids[model.similarity[hot].indices].tolist())
    assert len({r.id for r in after} & (neighbours | {item})) >= 5


def test_cooccurrence_of_a_tiny_basket_log():
    # baskets: {0,1}, {0,1}, {0,2}; item 3 never bought
    basket = np.array([0, 0, 1, 1, 2, 2])
    items = np.array([0, 1, 0, 1, 0, 2])
    weights = np.ones(6)
    sim = cooccur.item_similarity(basket, np.full(6, -1), items, weights, 4, user_share=0.0, shrink=0.0, k=10)
    dense = sim.toarray()
    assert dense[0, 1] == pytest.approx(2 / np.sqrt(3 * 2)) and dense[0, 2] == pytest.approx(1 / np.sqrt(3))
    assert dense[1, 2] == 0 and not dense[3].any() and not np.diag(dense).any()
    assert cooccur.top_k_rows(sp.csr_matrix(dense), 1).toarray()[0].nonzero()[0].tolist() == [1]
    assert cooccur.decay(np.array([0, 86400 * 10]), 86400 * 10, 10.0).tolist() == [0.5, 1.0]


def test_ranking_metrics_on_known_lists():
    rec = np.array([5, 3, 9, 1])
    assert offline_eval.recall_at(rec, np.array([3, 1, 7]), 2) == pytest.approx(1 / 3)
    assert offline_eval.ndcg_at(rec, np.array([5]), 10) == pytest.approx(1.0)
    assert offline_eval.ndcg_at(rec, np.array([3]), 10) == pytest.approx(1 / np.log2(3))
    assert top_k(np.array([0.0, 0.5, 0.5, 0.9]), 3).tolist() == [3, 1, 2]
    assert rerank(np.array([1.0, 0.9, 0.8]), np.array([0.0, 0.0, 1.0]), 0.0).tolist() == [0, 1, 2]
    assert rerank(np.array([1.0, 0.9, 0.8]), np.array([0.0, 0.0, 1.0]), 0.5).tolist() == [2, 0, 1]


def test_seasonal_lift_and_near_misses():
    months = np.array(["2010-01-15", "2010-06-15", "2010-12-10", "2010-12-20"], dtype="datetime64[s]").astype(np.int64)
    # item 0 sells evenly over the year, item 1 nearly only in December
    items = np.array([0, 0, 0, 0, 1, 1])
    times = np.concatenate([months, months[[2, 3]]])
    total, lift = demand.seasonal_lift(items, times, np.ones(6), (12,), 2)
    assert total.tolist() == [4, 2]
    assert lift[1] == pytest.approx(1.0 / (4 / 6)) and lift[0] == pytest.approx(0.5 / (4 / 6))
    # item 0 is bought mostly with tagged items 1 and 2 and scores just under the threshold
    sim = sp.csr_matrix(np.array([[0, 0.6, 0.3, 0.1], [0.6, 0, 0, 0], [0.3, 0, 0, 0], [0.1, 0, 0, 0]]))
    share = demand.copurchase_share(sim, np.array([0, 1, 1, 0]))
    assert share[0] == pytest.approx(0.9)
    assert demand.near_miss(np.array([0.55, 0.9, 0.9, 0.1]), 0.6, share, 0.1, 0.5).tolist() == [0]


def test_seasonal_tags_from_real_sales_dates_need_review_and_show_their_evidence(behaviour_workspace):
    settings, store = behaviour_workspace
    table = pacsv.read_csv(behaviour_events(default_data_dir()))
    position = {pid: i for i, pid in enumerate(store.product_ids())}
    item_ids = np.array(store.product_ids(), dtype=object)
    bought = [t == "purchase" and i in position for t, i in zip(table.column("event_type").to_pylist(),
                                                                 table.column("item_id").to_pylist())]
    rows = table.filter(pa.array(bought))
    items = np.array([position[i] for i in rows.column("item_id").to_pylist()])
    times = rows.column("event_time").to_numpy().astype("datetime64[s]").astype(np.int64)
    tags = derived_tags.seasonal_tags(item_ids, items, times, rows.column("quantity").to_numpy().astype(float),
                                      settings.behaviour)
    titles = {p.id: p.title.upper() for p in store.products()}
    says = [("CHRISTMAS" in titles[pid]) for pid, *_ in tags]
    selling = np.bincount(items, weights=rows.column("quantity").to_numpy(), minlength=len(item_ids)) >= 50
    base = np.mean(["CHRISTMAS" in titles[pid] for pid in item_ids[selling]])
    assert len(tags) > 100 and np.mean(says) > 3 * base  # the dates alone find the Christmas trade
    assert store.replace_derived_tags("seasonal", tags) == len(tags)

    pid = next(pid for (pid, *_), yes in zip(tags, says, strict=True) if yes)
    shown = explain(store, pid)["tags"]["season"][0]
    assert (shown["value"], shown["source"], shown["status"], shown["score"]) == ("christmas", "behaviour", "review",
                                                                                    None)
    evidence = shown["evidence"]
    assert len(evidence["monthly_share"]) == 12 and sum(evidence["monthly_share"]) == pytest.approx(1, abs=0.01)
    assert evidence["lift"] >= 3 and shown["why"].startswith("derived from sales dates")
    assert ProductOut.model_validate(explain(store, pid)).tags["season"][0].why == shown["why"]  # GET /products

    log = open_review_log(store)
    queued, total = queue(store, log, family="season", limit=5)
    assert total == len(tags) and queued[0].behaviour[0]["derived"] == "seasonal"
    assert bulk_targets(log, "season", 0.0) == []  # no calibrated score: a person looks at each
    decide(store, log, [DecisionIn(pid, "season", "reject")], "tester")  # not Christmas, says a person
    assert store.replace_derived_tags("seasonal", tags) == len(tags) - 1  # and it is not proposed again
    assert [t.source for t in store.tags_of(pid) if t.family == "season"] == []


def test_near_misses_bought_with_a_tag_go_to_review_first(built):
    """Real co-purchases of the slice: products whose title says HEART carry motif=heart (the catalog's word);
    every other bought product has the tagger's "needs review" for motif with heart just under its threshold.
    Those mostly bought with heart products are proposed heart, with the share as evidence, and come first."""
    settings, store, log, model = built
    titles = {p.id: p.title.upper() for p in store.products()}
    hearts = {pid for pid, t in titles.items() if "HEART" in t}
    has_tag = np.array([pid in hearts for pid in model.item_ids.tolist()], dtype=float)
    share = demand.copurchase_share(model.similarity, has_tag)
    others = [pid for i, pid in enumerate(model.item_ids.tolist()) if pid not in hearts and
              model.similarity[i].nnz]
    with store.transaction() as db:
        for pid in hearts:
            store.set_catalog_tags(db, pid, {"motif": ["heart"]})
        candidates = [{"value": "star", "score": 0.5, "threshold": 0.7},
                      {"value": "heart", "score": 0.5, "threshold": 0.6}]
        store.set_model_tags(db, {pid: ([("motif", "star", "review", 0.5, {"candidates": candidates,
                                                                           "threshold": 0.7})], "h")
                                  for pid in others})
    report = derived_tags.derive(store, model.item_ids, model.position, model.similarity,
                                 (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)), settings.behaviour)
    expected = {pid for pid in others if share[model.position[pid]] >= settings.behaviour.near_miss_min_share}
    assert expected and report.copurchase == len(expected) and report.seasonal == 0
    proposed = {pid for pid in others for t in store.tags_of(pid) if t.source == "behaviour"}
    assert proposed == expected

    queued, total = queue(store, open_review_log(store), family="motif", limit=len(others))
    assert total == len(others)
    first = queued[: len(expected)]
    assert {q.product_id for q in first} == expected  # same tagger score: the co-purchase evidence orders them
    top = first[0]
    assert top.candidates[0]["value"] == "star" and top.behaviour[0]["value"] == "heart"
    assert top.behaviour[0]["share"] == pytest.approx(share[model.position[top.product_id]], abs=1e-3)
    assert set(b["id"] for b in top.behaviour[0]["bought_with"]) <= hearts
    shown = next(t for t in explain(store, top.product_id)["tags"]["motif"] if t["source"] == "behaviour")
    assert shown["status"] == "review" and shown["why"].startswith("bought with products carrying it")
