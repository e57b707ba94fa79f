"""Big images sent to the service: concurrent `POST /products` never decode more images at once than
`service.max_image_decodes`, counted by the service's own gate around the real Pillow decodes."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import uvicorn
from loopback import free_port, wait_until_ok
from PIL import Image
from service_helpers import START_TIMEOUT
from shoptag.core.settings import Settings
from shoptag.pipeline.ingest import ingest
from shoptag.pipeline.workspace import Workspace
from shoptag.service.app import create_app

REQUESTS = 8
LIMIT = 2


def test_concurrent_big_image_posts_decode_at_most_the_bound_at_once(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(REQUESTS):  # 36 MP each, under the 40 MP cap: a few KB on disk, 36 MB decoded
        Image.new("L", (6000, 6000), i).save(images / f"big-{i}.png")
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(json.dumps({"id": "p0", "title": "poster"}) + "\n")
    settings = Settings(workspace=tmp_path / "ws", service={"image_root": images, "max_image_decodes": LIMIT})
    store = Workspace(settings.workspace).open_store()
    try:
        ingest(settings, store, catalog, show_progress=False)
    finally:
        store.close()
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(f"{base}/healthz", thread.is_alive, START_TIMEOUT)
        post = lambda i: httpx.post(f"{base}/products", json={"id": f"big-{i}", "title": "poster",  # noqa: E731
                                                              "image": f"big-{i}.png"}, timeout=120)
        with ThreadPoolExecutor(REQUESTS) as pool:
            answers = list(pool.map(post, range(REQUESTS)))
    finally:
        server.should_exit = True
        thread.join(timeout=60)
    # validated (decoded) first; no model is trained here, so each then gets "run `shoptag train` first"
    assert [a.status_code for a in answers] == [409] * REQUESTS, answers[0].text
    gate = app.state.service.decodes
    assert gate.in_flight == 0
    assert gate.peak == LIMIT, f"{REQUESTS} concurrent big images: at most {LIMIT} decoded at once, got {gate.peak}"
