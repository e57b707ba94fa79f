"""Behaviour through the CLI and the HTTP service on the bundled sample: events in, recommendations out."""

from __future__ import annotations

import csv
import json
from collections import Counter

import httpx
import pytest
from service_helpers import API_KEY, REPO, build_workspace, service_settings, thread_server
from typer.testing import CliRunner

from shoptag.cli import EXIT_REJECTS, EXIT_USAGE, app
from shoptag.pipeline.workspace import Workspace

EVENTS = REPO / "examples" / "sample_events.csv"


def purchases() -> list[dict]:
    with open(EVENTS, newline="") as f:
        return [r for r in csv.DictReader(f) if r["type"] == "purchase"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    settings = service_settings(tmp_path_factory.mktemp("behaviour-service") / "ws")
    # a strong re-rank, so one purchase visibly moves a search hit
    settings = settings.model_copy(update={"behaviour": settings.behaviour.model_copy(update={"rerank_strength": 1.0})})
    build_workspace(settings, trained=False)
    with thread_server(settings) as url, httpx.Client(base_url=url, timeout=120) as http:
        yield http


def test_events_need_the_key_and_count_rejects(served):
    body = [{"time": "2024-06-01 10:00:00", "type": "purchase", "user": "web-1", "item": "sp-031"},
            {"time": "2024-06-01 10:00:00", "type": "purchase", "user": "web-1", "item": "nope"}]
    assert served.post("/events", json=body).status_code == 401
    response = served.post("/events", json=body, headers={"X-API-Key": API_KEY})
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["added"], data["rejected"], data["rejects"][0]["line"]) == (1, 1, 2)
    assert served.post("/events", json=[{**body[0], "usr": "x"}], headers={"X-API-Key": API_KEY}).status_code == 422
    empty = served.post("/events", json=[], headers={"X-API-Key": API_KEY})  # not "every event needs a 'time'"
    assert empty.status_code == 200 and (empty.json()["received"], empty.json()["added"]) == (0, 0), empty.text


def test_recommendations_follow_a_users_events(served):
    rows = purchases()
    body = [{"time": r["time"], "type": r["type"], "user": r["user"], "session": r["session"], "item": r["item"]}
            for r in rows]
    for start in range(0, len(body), 8):
        assert served.post("/events", json=body[start:start + 8], headers={"X-API-Key": API_KEY}).status_code == 200
    assert served.get("/recommendations/web-2", params={"context": "no-such-product"}).status_code == 404
    fresh = served.get("/recommendations/web-2", params={"k": 5}).json()
    assert fresh["known_user"] is False and len(fresh["items"]) == 5  # popular, not an error
    assert {i["reason"] for i in fresh["items"]} == {"popular"}
    # the most active buyer: what they bought and what is bought with it comes first
    user = Counter(r["user"] for r in rows).most_common(1)[0][0]
    mine = {r["item"] for r in rows if r["user"] == user}
    got = served.get(f"/recommendations/{user}", params={"k": 5}).json()
    assert got["known_user"] is True
    assert {i["id"] for i in got["items"]} & mine and all(i["title"] for i in got["items"])
    # one new purchase by a new user shows at once (no rebuild)
    item = rows[0]["item"]
    served.post("/events", json=[{"time": "2024-06-02 10:00:00", "type": "purchase", "user": "web-3",
                                  "item": item}], headers={"X-API-Key": API_KEY})
    now = served.get("/recommendations/web-3", params={"k": 5}).json()
    assert now["known_user"] is True and now["items"][0]["id"] == item


def test_similar_modes_and_user_rerank(served):
    behaviour = served.get("/similar/sp-001", params={"mode": "behaviour", "k": 5})
    assert behaviour.status_code == 200, behaviour.text
    content = served.get("/similar/sp-001", params={"k": 5}).json()["hits"]
    assert content
    assert served.get("/similar/sp-001", params={"mode": "sideways"}).status_code == 422
    plain = [h["id"] for h in served.get("/search", params={"q": "jeans", "size": 10}).json()["hits"]]
    last = plain[-1]
    served.post("/events", json=[{"time": "2024-06-03 10:00:00", "type": "purchase", "user": "web-jeans",
                                  "item": last}], headers={"X-API-Key": API_KEY})
    ranked = [h["id"] for h in served.get("/search", params={"q": "jeans", "size": 10, "user": "web-jeans"}
                                          ).json()["hits"]]
    assert sorted(ranked) == sorted(plain) and ranked.index(last) < plain.index(last)


def test_cli_events_recommend_and_similar_modes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"SHOPTAG_WORKSPACE": str(tmp_path / "ws")}
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(REPO / "examples" / "sample_catalog.jsonl")], env=env).exit_code == 0
    result = runner.invoke(app, ["events", str(EVENTS), "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == sum(1 for _ in open(EVENTS)) - 1
    bad = tmp_path / "bad.csv"
    bad.write_text("time,type,user,item\n2024-01-01,purchase,u1,sp-001\nsoon,purchase,u1,sp-001\n2024-01-02,search,u1,\n")
    result = runner.invoke(app, ["events", str(bad), "--json"], env=env)
    assert result.exit_code == EXIT_REJECTS and json.loads(result.stdout)["rejects"][0]["line"] == 3
    result = runner.invoke(app, ["events", str(bad)], env=env)  # a line without an item is not "item None"
    assert "  line 4: search event without a query" in result.output and "None" not in result.output, result.output
    result = runner.invoke(app, ["recommend", "u001", "--k", "3", "--json"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["known_user"] and len(data["items"]) == 3
    result = runner.invoke(app, ["recommend", "u001", "--context", "no-such-product", "--json"], env=env)
    assert result.exit_code == 4 and "no-such-product" in json.loads(result.stdout)["error"]
    result = runner.invoke(app, ["similar", "sp-001", "--mode", "blend", "--k", "3", "--json"], env=env)
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == 3
    assert runner.invoke(app, ["similar", "sp-001", "--mode", "sideways"], env=env).exit_code == EXIT_USAGE
    result = runner.invoke(app, ["similar", "sp-040", "--mode", "behaviour"], env=env)  # in no event: says so
    assert result.exit_code == 0 and "no shopper engaged with sp-040" in result.output, result.output
    result = runner.invoke(app, ["similar", "no-such-product", "--mode", "blend", "--json"], env=env)
    assert result.exit_code == 4 and "`shoptag events`" in result.stdout, result.output
    assert "--rebuild" not in result.stdout  # no such option: the message names the command that rebuilds
    for option in (["--tag", "colour=Black"], ["--diversity", "cap:category"]):  # refused, as over HTTP, not ignored
        result = runner.invoke(app, ["similar", "sp-001", "--mode", "blend", *option, "--json"], env=env)
        assert result.exit_code == EXIT_USAGE, (option, result.output)
        assert "mode content only" in json.loads(result.stdout)["error"]


def test_popularity_from_events_reaches_search_sort(tmp_path, monkeypatch):
    """events → model → each product's popularity in the store → the search index, at once (so a later `tag`
    has nothing stale to send) → sort=popularity."""
    monkeypatch.chdir(tmp_path)
    env = {"SHOPTAG_WORKSPACE": str(tmp_path / "ws"), "SHOPTAG_ENCODERS__TEXT_MODEL": "use-multilingual"}
    build_workspace(service_settings(tmp_path / "ws"))  # trained, tagged, indexed
    runner = CliRunner()
    result = runner.invoke(app, ["events", str(EVENTS), "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["search_sent"] > 0  # popularity changed those documents
    result = runner.invoke(app, ["tag", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["search_repaired"] == 0  # nothing was left out of search
    result = runner.invoke(app, ["search", "", "--sort", "popularity", "--size", "5", "--json"], env=env)
    assert result.exit_code == 0, result.output
    ids = [h["id"] for h in json.loads(result.stdout)["results"]["hits"]]
    store = Workspace(tmp_path / "ws").open_store()
    try:
        popularity = store.popularity(store.product_ids())
    finally:
        store.close()
    ranked = sorted(popularity, key=lambda pid: (-popularity[pid], pid))
    assert ids == ranked[:5] and popularity[ids[0]] == 1.0


def test_the_behaviour_data_set_from_the_cli(tmp_path):
    from shoptag.pipeline.datasets import behaviour_events, default_data_dir

    if not behaviour_events(default_data_dir()).is_file():
        pytest.skip("behaviour data not found (../shared/data/behaviour)")
    result = CliRunner().invoke(app, ["datasets", "behaviour", "--out", str(tmp_path / "items.jsonl")])
    assert result.exit_code == 0, result.output
    first = json.loads((tmp_path / "items.jsonl").read_text().splitlines()[0])
    assert first["id"] and first["title"] and "events.csv.gz" in result.output


def test_demand_per_tag_on_metrics(served):
    served.get("/recommendations/web-2")  # the model is loaded
    text = served.get("/metrics").text
    recent = [line for line in text.splitlines() if line.startswith("shoptag_tag_units{") and 'window="recent"' in line]
    assert recent and any(float(line.rsplit(" ", 1)[1]) > 0 for line in recent)
    assert 'family="category"' in text
