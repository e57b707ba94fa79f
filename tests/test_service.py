"""The storefront service, started for real on loopback and driven over HTTP: every endpoint, bad inputs,
auth, metrics, concurrent writes while reading, and recovery after the process is killed."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service_helpers import API_KEY, ServiceProcess, build_workspace, service_settings, thread_server
from shoptag.catalog.records import parse_record
from shoptag.core.settings import Settings
from shoptag.pipeline.ingest import stored
from shoptag.pipeline.workspace import Workspace
from shoptag.service.journal import WriteJournal

AUTH = {"X-API-Key": API_KEY}
NEW_JEANS = {"id": "new-jeans", "title": "女士高腰直筒牛仔裤 浅蓝色", "description": "弹力牛仔布，九分裤长",
             "attributes": {"brand": "Lee", "material": "棉"}}


def product(pid: str, title: str = "Men's slim fit stretch denim jeans, dark blue") -> dict:
    return {"id": pid, "title": title, "attributes": {"material": "cotton"}}


@pytest.fixture(scope="module")
def base_workspace(tmp_path_factory) -> Settings:
    """Trained, tagged and indexed once; each server gets its own copy."""
    settings = service_settings(tmp_path_factory.mktemp("service-base"))
    build_workspace(settings)
    return settings


def copy_workspace(base: Settings, target: Path) -> Settings:
    shutil.copytree(base.workspace, target)
    return base.model_copy(update={"workspace": target})


@pytest.fixture(scope="module")
def client(base_workspace, tmp_path_factory) -> Iterator[httpx.Client]:
    settings = copy_workspace(base_workspace, tmp_path_factory.mktemp("served") / "ws")
    with thread_server(settings) as url, httpx.Client(base_url=url, timeout=120) as http:
        yield http


def similar_ids(client: httpx.Client, pid: str, **params) -> list[str]:
    response = client.get(f"/similar/{pid}", params={"k": 100, **params})
    assert response.status_code == 200, response.text
    return [h["id"] for h in response.json()["hits"]]


def search_ids(client: httpx.Client, q: str, **params) -> list[str]:
    response = client.get("/search", params={"q": q, "size": 100, **params})
    assert response.status_code == 200, response.text
    return [h["id"] for h in response.json()["hits"]]


def assert_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["detail"]
    assert "Traceback" not in response.text
    return body


# ---- reads ------------------------------------------------------------------------------------------------------
def test_health_docs_and_reads(client):
    health = client.get("/healthz").json()
    assert health == {"status": "ok", "products": 70, "indexed": 70, "model": True}
    # the UI pages would load their scripts from a CDN (blank offline): off; the schema is served locally
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    assert {"/similar/{product_id}", "/products", "/feedback", "/search"} <= set(client.get("/openapi.json").json()["paths"])

    hits = client.get("/similar/sp-001", params={"k": 5}).json()["hits"]
    assert len(hits) == 5 and "sp-001" not in [h["id"] for h in hits]
    jeans_only = similar_ids(client, "sp-001", tag="category=Jeans")
    assert jeans_only and all("Jeans" in h["tags"]["category"]
                              for h in client.get("/similar/sp-001", params={"tag": "category=Jeans"}).json()["hits"])

    found = client.get("/search", params={"q": "牛仔裤", "facet": "category"}).json()
    assert found["total"] > 0 and "sp-001" in [h["id"] for h in found["hits"]]
    top = found["facets"]["category"][0]["count"]  # Jeans leads (ties possible: facets count accepted tags only)
    assert {"value": "Jeans", "count": top} in found["facets"]["category"]
    params = {"q": "牛仔裤", "size": 2, "highlight": "true", "attr_facet": "brand", "query_tags": "suggest"}
    page = client.get("/search", params=params).json()
    following = client.get("/search", params={**params, "cursor": page["cursor"]}).json()
    assert not {h["id"] for h in page["hits"]} & {h["id"] for h in following["hits"]}
    assert "<em>牛仔裤</em>" in page["hits"][0]["highlights"]["title"] and page["attribute_facets"]["brand"]
    assert {t["family"] for t in page["query_tags"]} == set(page["suggested_filters"])
    applied = client.get("/search", params={"q": "black dresses", "tag": ["category=Dresses", "colour=Black"],
                                            "query_tags": "suggest"}).json()
    assert {(t["family"], t["value"]) for t in applied["query_tags"] if t["named"]} >= {("category", "Dresses"),
                                                                                         ("colour", "Black")}
    assert "Dresses" not in applied["suggested_filters"].get("category", [])  # already a filter: not offered
    assert "Black" not in applied["suggested_filters"].get("colour", [])
    assert all(t["used_as"] == "suggestion" and (t["named"] or t["score"] >= t["threshold"]) for t in page["query_tags"])

    # a filter value no product has matches nothing, and the answer names the catalog's closest value
    for params, hint in (({"tag": "category=jeans"}, "category = 'jeans'" + ": values match exactly, case "
                          "included (did you mean 'Jeans'?)"), ({"attr": "brand=zara"}, "(did you mean 'ZARA' or 'Zara'?)")):
        empty = client.get("/search", params={"q": "牛仔裤", **params}).json()
        assert empty["total"] == 0 and hint in empty["hint"]
    assert found["hint"] is None

    # the README's example on the bundled sample: jeans priced 20 to 60, cheapest first, with price buckets
    readme = client.get("/search", params={"q": "jeans", "range": "price=20:60", "sort": "price_asc",
                                           "facet": "category", "range_facet": "price=25,50,100",
                                           "highlight": "true"}).json()
    prices = [float(h["numbers"]["price"]) for h in readme["hits"]]
    assert readme["total"] >= 3 and prices == sorted(prices) and all(20 <= p <= 60 for p in prices)
    assert {"value": "Jeans", "count": readme["facets"]["category"][0]["count"]} in readme["facets"]["category"]
    # a query matches its text and its real neighbours, not the whole catalog (the kNN window used to count)
    assert client.get("/search", params={"q": "jeans"}).json()["total"] < 70 / 2
    assert client.get("/search", params={"q": "蒸汽熨斗挂烫机"}).json()["total"] < 70 / 2  # no irons in the sample

    tags = client.get("/products/sp-001").json()["tags"]
    assert tags["category"][0] == {"value": "Jeans", "source": "catalog", "status": "accepted", "score": 1.0,
                                   "evidence": None, "why": None}


def test_unknown_ids_are_404(client):
    assert_error(client.get("/products/no-such"), 404)
    assert_error(client.get("/similar/no-such"), 404)
    assert_error(client.delete("/products/no-such", headers=AUTH), 404)
    assert_error(client.post("/feedback", json={"id": "no-such", "family": "colour", "values": ["Red"]},
                             headers=AUTH), 404)


# ---- writes -----------------------------------------------------------------------------------------------------
def test_post_is_visible_at_once_with_explained_tags(client):
    response = client.post("/products", json=NEW_JEANS, headers=AUTH)
    assert response.status_code == 200, response.text
    (added,) = response.json()["products"]
    assert added["id"] == "new-jeans"
    model_tags = [t for tags in added["tags"].values() for t in tags if t["source"] == "model"]
    assert model_tags and all(t["evidence"]["neighbours"] and t["evidence"]["sources"] for t in model_tags)

    assert "new-jeans" not in similar_ids(client, "new-jeans")
    assert len(similar_ids(client, "new-jeans")) == 70
    assert "new-jeans" in similar_ids(client, "sp-001")
    assert "new-jeans" in search_ids(client, "高腰直筒牛仔裤")
    assert client.get("/products/new-jeans").json()["tags"] == added["tags"]


def test_post_batch_and_delete(client):
    batch = [product(f"batch-{i}", f"Leather wrist watch, stainless steel case, model {i}") for i in range(3)]
    response = client.post("/products", json=batch, headers=AUTH)
    assert response.status_code == 200, response.text
    assert [p["id"] for p in response.json()["products"]] == ["batch-0", "batch-1", "batch-2"]
    assert "batch-1" in similar_ids(client, "batch-0")

    deleted = client.delete("/products/batch-1", headers=AUTH)
    assert deleted.json() == {"id": "batch-1", "deleted": True}
    assert "batch-1" not in similar_ids(client, "batch-0")
    assert "batch-1" not in search_ids(client, "leather wrist watch stainless steel")
    assert_error(client.get("/products/batch-1"), 404)
    assert_error(client.get("/similar/batch-1"), 404)


def test_feedback_wins_and_survives_a_later_post(client):
    assert client.post("/products", json=product("fb-jeans"), headers=AUTH).status_code == 200
    response = client.post("/feedback", json=[{"id": "fb-jeans", "family": "colour", "values": ["Purple"]}],
                           headers=AUTH)
    assert response.json() == {"applied": 1, "products": ["fb-jeans"]}

    changed = product("fb-jeans", "Men's slim fit stretch denim jeans, dark blue, new season")
    reposted = client.post("/products", json=changed, headers=AUTH).json()["products"][0]
    assert reposted["tags"]["colour"] == [{"value": "Purple", "source": "feedback", "status": "accepted",
                                           "score": 1.0, "evidence": None, "why": None}]
    assert client.get("/products/fb-jeans").json()["tags"]["colour"][0]["value"] == "Purple"
    assert search_ids(client, "", tag="colour=Purple") == ["fb-jeans"]


def test_catalog_images_only_from_the_image_root(client):
    inside = {**product("with-image"), "image": "images/jeans-navy.jpg"}
    assert client.post("/products", json=inside, headers=AUTH).status_code == 200
    outside = {**product("bad-image"), "image": "../../../../etc/hostname"}
    assert "outside the service's image folder" in str(assert_error(
        client.post("/products", json=outside, headers=AUTH), 422)["detail"])


# ---- bad input, limits, auth ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path", "kwargs", "status", "says"), [
    ("post", "/products", {"content": b"{not json", "headers": {**AUTH, "Content-Type": "application/json"}}, 400,
     "not valid JSON"),
    ("post", "/products", {"json": {"title": "no id"}}, 422, "id"),
    ("post", "/products", {"json": {"id": "x", "title": 42}}, 422, "title"),
    ("post", "/products", {"json": {"id": "x"}}, 422, "nothing to tag"),
    ("post", "/products", {"json": [product("dup"), product("dup")]}, 422, "duplicate id"),
    ("post", "/products", {"json": []}, 422, "at least 1 item"),
    ("post", "/products", {"json": [product(f"p{i}") for i in range(9)]}, 422, "over the limit of 8"),
    ("post", "/products", {"json": product("huge", "x" * 70_000)}, 413, "over the limit"),
    ("post", "/feedback", {"json": {"id": "sp-001", "values": ["Red"]}}, 422, "family"),
    ("get", "/similar/sp-001", {"params": {"k": 0}}, 422, "k"),
    ("get", "/similar/sp-001", {"params": {"k": 10_000}}, 422, "k"),
    ("get", "/similar/sp-001", {"params": {"k": "many"}}, 422, "k"),
    ("get", "/similar/sp-001", {"params": {"tag": "no-equals-sign"}}, 422, "family=value"),
    ("get", "/search", {"params": {"q": "x" * 501}}, 422, "q"),
    ("get", "/search", {"params": {"q": "jeans", "size": 0}}, 422, "size must be between"),
    ("get", "/search", {"params": {"q": "jeans", "size": 5000}}, 422, "size must be between"),
    ("get", "/search", {"params": {"q": "jeans", "from": -3}}, 422, "from must be 0 or more"),
    ("get", "/search", {"params": {"q": "jeans", "from": 995, "size": 10}}, 422, "cursor"),
    ("get", "/search", {"params": {"q": "jeans", "sort": "cheapest"}}, 422, "unknown sort"),
    ("get", "/search", {"params": {"q": "jeans", "range": "price=50:10"}}, 422, "above max"),
    ("get", "/search", {"params": {"q": "jeans", "range": "price=low:10"}}, 422, "not a number"),
    ("get", "/search", {"params": {"q": "jeans", "range": "weight=1:2"}}, 422, "not a numeric attribute"),
    ("get", "/search", {"params": {"q": "jeans", "attr": "nope=x"}}, 422, "unknown attribute"),
    ("get", "/search", {"params": {"q": "jeans", "cursor": "garbage"}}, 422, "damaged"),
    ("get", "/search", {"params": {"q": "jeans", "cursor": "eyJ2IjoxfQ"}}, 422, "damaged"),  # {"v":1}, no fields
    ("get", "/similar/sp-001", {"params": {"diversity": "shuffle"}}, 422, "unknown diversity"),
    # an unknown parameter would otherwise be ignored: page 1 again for `page=2`, no filter for `tags=`
    ("get", "/search", {"params": {"q": "jeans", "page": 2}}, 422, "unknown query parameter 'page' (did you mean 'from'?)"),
    ("get", "/search", {"params": {"q": "jeans", "tags": "colour=Blue"}}, 422, "did you mean 'tag'?"),
    ("post", "/products", {"params": {"refresh": "true"}, "json": product("p1")}, 422, "it takes none"),
])
def test_bad_input_gets_a_clear_4xx(client, method, path, kwargs, status, says):
    body = assert_error(client.request(method, path, **{"headers": AUTH, **kwargs}), status)
    assert says in str(body["detail"])


def test_chunked_oversize_body_is_413(client):
    chunks = (b"[" + b" " * 10_000 for _ in range(10))  # no Content-Length: the limit applies while reading
    assert_error(client.post("/products", content=chunks, headers={**AUTH, "Content-Type": "application/json"}), 413)


def test_write_endpoints_need_the_api_key(client):
    for request in (lambda h: client.post("/products", json=product("auth"), headers=h),
                    lambda h: client.delete("/products/sp-002", headers=h),
                    lambda h: client.post("/feedback", json={"id": "sp-002", "family": "colour", "values": []},
                                          headers=h)):
        assert_error(request({}), 401)
        assert_error(request({"X-API-Key": "wrong"}), 403)
    assert client.get("/products/sp-002").status_code == 200  # and nothing was deleted


def test_metrics(client):
    client.get("/similar/sp-003")
    client.post("/products", json=product("metered"), headers=AUTH)
    text = client.get("/metrics").text
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values['shoptag_request_duration_seconds_count{method="GET",route="/similar/{product_id}",status="200"}'] > 0
    assert values['shoptag_request_duration_seconds_count{method="POST",route="/products",status="200"}'] > 0
    assert values['shoptag_products_total{op="added"}'] > 0
    assert sum(v for k, v in values.items() if k.startswith("shoptag_tags_emitted_total{")) > 0
    assert values["shoptag_index_products"] == values["shoptag_store_products"] > 70
    assert values["shoptag_rejected_products_total"] > 0


# ---- concurrency ------------------------------------------------------------------------------------------------
def test_concurrent_writes_while_reading(client):
    before = client.get("/healthz").json()["products"]
    writers, per_writer, deadline = 3, 4, time.monotonic() + 150
    statuses: list[int] = []
    done = threading.Event()

    def write(w: int) -> None:
        for i in range(per_writer):
            r = client.post("/products", json=product(f"w{w}-{i}", f"Running shoes {w} {i}, breathable mesh"),
                            headers=AUTH)
            statuses.append(r.status_code)
            if r.status_code == 200:  # read-your-write: visible to /similar as soon as the POST answered
                statuses.append(client.get(f"/similar/w{w}-{i}", params={"k": 3}).status_code)

    def read() -> None:
        for _ in range(300):  # bounded in count and in time
            if done.is_set() or time.monotonic() > deadline:
                return
            statuses.append(client.get("/similar/sp-001", params={"k": 5}).status_code)
            statuses.append(client.get("/search", params={"q": "运动鞋 shoes"}).status_code)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in threads + readers:
        t.start()
    for t in threads:
        t.join()
    done.set()
    for t in readers:
        t.join()
    assert statuses and set(statuses) == {200}
    assert len(statuses) > 2 * writers * per_writer  # the readers ran too
    health = client.get("/healthz").json()
    assert health["products"] == health["indexed"] == before + writers * per_writer
    assert all(client.get(f"/products/w{w}-{i}").status_code == 200
               for w in range(writers) for i in range(per_writer))


# ---- a workspace the service must repair or refuse -------------------------------------------------------------
def test_untrained_unindexed_workspace(base_workspace, tmp_path):
    """Only ingested: the index is built from the store at start, and tagging says to train first."""
    settings = base_workspace.model_copy(update={"workspace": tmp_path / "ws"})
    build_workspace(settings, trained=False)
    with thread_server(settings) as url, httpx.Client(base_url=url, timeout=120) as http:
        assert http.get("/healthz").json() == {"status": "ok", "products": 70, "indexed": 70, "model": False}
        assert "sp-002" in similar_ids(http, "sp-001")
        body = assert_error(http.post("/products", json=product("x"), headers=AUTH), 409)
        assert "shoptag train" in body["detail"]


def test_killed_service_recovers(base_workspace, tmp_path):
    """SIGKILL after a write: the product is still stored and indexed at restart. Then a crash between the
    store write and the index write (store changed, journal left behind): the restart re-syncs those ids."""
    settings = copy_workspace(base_workspace, tmp_path / "ws")
    server = ServiceProcess(settings)
    try:
        assert httpx.post(f"{server.base_url}/products", json=NEW_JEANS, headers=AUTH, timeout=120).status_code == 200
    finally:
        server.kill()

    store = Workspace(settings.workspace).open_store()
    try:  # what a write leaves when the process dies after the store commit, before the index commit
        WriteJournal(settings.workspace / "service-pending-writes.json").record(["sp-005", "late-jeans"])
        late = stored(parse_record(product("late-jeans"), settings.workspace, settings.catalog))
        with store.transaction() as db:
            store.upsert_products(db, [late])
        store.delete_products(["sp-005"])
    finally:
        store.close()

    with thread_server(settings) as url, httpx.Client(base_url=url, timeout=120) as http:  # the restart
        assert http.get("/healthz").json()["products"] == http.get("/healthz").json()["indexed"] == 71
        assert http.get("/products/new-jeans").status_code == 200
        assert "new-jeans" in similar_ids(http, "sp-001")
        assert "late-jeans" in similar_ids(http, "sp-001")
        assert "sp-005" not in similar_ids(http, "sp-001")
        assert_error(http.get("/similar/sp-005"), 404)
    assert not (settings.workspace / "service-pending-writes.json").exists()
