"""Fixtures: search backends (embedded, a real noida-db process, and SHOPTAG_TEST_ES_URL when set) and a sample catalog."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from loopback import free_port, wait_until_ok
from shoptag.core.settings import ESSettings, Settings
from shoptag.indexer.documents import DocTag, SearchDoc
from shoptag.indexer.embedded_search import EmbeddedBackend
from shoptag.indexer.es.backend import ESBackend
from shoptag.indexer.es.client import make_client
from shoptag.indexer.neighbours import Neighbours
from shoptag.indexer.search_common import VectorDims

DIMS = VectorDims(text=16, image=None, fused=16)
TOPICS = ("denim", "watch", "dress", "shoes", "top", "gloves", "snack")
# id, title, description, topic, tags (family -> value)
CATALOG = [
    ("cn-jeans", "女士高腰牛仔裤 修身显瘦", "弹力面料，四季可穿", "denim", {"category": "jeans", "color": "blue", "gender": "women"}),
    ("cn-watch", "男士石英手表 防水", "不锈钢表带", "watch", {"category": "watch", "color": "black", "gender": "men"}),
    ("cn-smartwatch", "智能运动手表 心率监测", "蓝牙连接", "watch", {"category": "watch", "color": "black", "gender": "women"}),
    ("cn-dress", "夏季碎花连衣裙", "雪纺面料", "dress", {"category": "dress", "color": "red", "gender": "women"}),
    ("cn-gloves", "冬季保暖手套", "加绒加厚", "gloves", {"category": "gloves", "color": "black", "gender": "men"}),
    ("cn-jerky", "麻辣牛肉干 零食", "四川特产", "snack", {"category": "snack"}),
    ("en-jeans", "Slim Fit Blue Denim Jeans", "Stretch cotton, five pockets", "denim", {"category": "jeans", "color": "blue", "gender": "men"}),
    ("en-watch", "Classic Leather Strap Wrist Watch", "Analog dial, water resistant", "watch", {"category": "watch", "color": "brown", "gender": "men"}),
    ("en-shoes", "Lightweight Running Shoes", "Breathable mesh upper", "shoes", {"category": "shoes", "color": "white", "gender": "women"}),
    ("en-dress", "Floral Summer Maxi Dress", "Flowing chiffon", "dress", {"category": "dress", "color": "red", "gender": "women"}),
    ("en-tee", "Cotton Crew Neck T-Shirt", "Soft jersey knit", "top", {"category": "top", "color": "white", "gender": "men"}),
    ("en-hoodie", "Fleece Pullover Hoodie", "Warm brushed fleece", "top", {"category": "top", "color": "blue", "gender": "women"}),
]


# prices (with ties, and two products without one), keyword attributes and listing times of the sample catalog
PRICES = {"cn-jeans": 199.0, "cn-watch": 899.0, "cn-smartwatch": 899.0, "cn-dress": 159.0, "cn-gloves": 49.0,
          "en-jeans": 59.5, "en-watch": 120.0, "en-shoes": 75.0, "en-dress": 59.5, "en-tee": 15.0}
BRANDS = {"cn-jeans": "Lee", "cn-watch": "Casio", "cn-smartwatch": "Huawei", "en-jeans": "Lee", "en-watch": "Casio",
          "en-shoes": "Nike", "en-tee": "Nike", "en-hoodie": "Nike"}
NUMERIC = ("price",)


def topic_vector(topic: str) -> np.ndarray:
    """The unit vector a topic's products cluster around (what a query about that topic encodes to)."""
    vector = np.zeros(DIMS.text, dtype=np.float32)
    vector[TOPICS.index(topic)] = 1.0
    return vector


def make_doc(pid: str, title: str, description: str, topic: str, tags: dict[str, str], seed: int) -> SearchDoc:
    """A product with deterministic vectors near its topic's."""
    noise = np.random.default_rng(seed).normal(scale=0.25, size=DIMS.text).astype(np.float32)
    vector = topic_vector(topic) + noise
    vector /= np.linalg.norm(vector)
    return SearchDoc(
        id=pid,
        title=title,
        description=description,
        tags={family: [DocTag(value, 0.9, "model")] for family, value in tags.items()},
        text_vector=vector,
        fused_vector=vector,
        content_hash=f"hash-{pid}",
        text_model="test-encoder",
        attributes={**({"brand": BRANDS[pid]} if pid in BRANDS else {}),
                    **({"price": f"{PRICES[pid]:g}"} if pid in PRICES else {})},
        listed_at=1_700_000_000.0 + 3600.0 * seed,
    )


@pytest.fixture(scope="session")
def catalog_docs() -> list[SearchDoc]:
    """The sample catalog: Chinese and English products with tags and topic vectors."""
    return [make_doc(*row, seed=i) for i, row in enumerate(CATALOG)]


class NoidaServer:
    """A real noida-db process serving the Elasticsearch API on a free loopback port; restartable on the
    same data directory, so tests can take it down and bring it back."""

    def __init__(self, data_dir: Path) -> None:
        noida_db = pytest.importorskip("noida_db", reason="noida-db is not installed (pip install noida-db)")
        # the server binary itself, not the `noida-db` script that runs it as a child: stopping is then exact
        self.binary = str(resources.files(noida_db).joinpath("noida-db"))
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        log = (self.data_dir.parent / f"{self.data_dir.name}.log").open("ab")
        self.process = subprocess.Popen(
            [self.binary, "start", "--only", "elasticsearch", "--host", "127.0.0.1",
             "--elasticsearch-port", str(self.port), "--data-dir", str(self.data_dir)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            wait_until_ok(f"{self.url}/_cluster/health", lambda: self.process.poll() is None, timeout)
        except (RuntimeError, TimeoutError) as error:
            self.stop()
            pytest.fail(f"noida-db did not become healthy on {self.url}: {error}; see {log.name}")

    def stop(self) -> None:
        """Terminate the server (it saves its data on the way out; the data directory stays)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None




@pytest.fixture(scope="session")
def noida_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NoidaServer]:
    """One noida-db for the session, terminated at the end."""
    server = NoidaServer(tmp_path_factory.mktemp("noida") / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def noida_factory(tmp_path: Path) -> Iterator[Callable[[], NoidaServer]]:
    """Start private noida-db processes (for tests that take the server down); all terminated at the end."""
    servers: list[NoidaServer] = []

    def start() -> NoidaServer:
        server = NoidaServer(tmp_path / f"noida-{len(servers)}")
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


def es_settings(url: str, **changes: object) -> ESSettings:
    """Connection settings for `url` with a fresh alias (and auth from SHOPTAG_ES__* when set)."""
    base = Settings().es if os.environ.get("SHOPTAG_TEST_ES_URL") == url else ESSettings()
    return ESSettings(**{**base.model_dump(), "url": url, "index_alias": f"test-{uuid.uuid4().hex[:12]}",
                         "max_retries": 2, "request_timeout": 10.0, "wait_for_refresh": True, **changes})


def drop_alias(settings: ESSettings) -> None:
    """Delete every index made for a test alias."""
    client = make_client(settings)
    try:
        names = list(client.indices.get(index=f"{settings.index_alias}-*", allow_no_indices=True))
        if names:  # clusters refuse wildcard deletes (action.destructive_requires_name)
            client.indices.delete(index=",".join(names))
    finally:
        client.close()


BACKENDS = ["embedded", "noida", "noida-client-fusion", "es-real"]


@pytest.fixture(params=BACKENDS)
def search_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EmbeddedBackend | ESBackend]:
    """A fresh, empty backend: embedded in a temp dir, or an Elasticsearch alias of its own."""
    if request.param == "embedded":
        backend = EmbeddedBackend(tmp_path / "search", DIMS, numeric=NUMERIC)
        yield backend
        backend.close()
        return
    if request.param == "es-real":
        url = os.environ.get("SHOPTAG_TEST_ES_URL")
        if not url:
            pytest.skip("SHOPTAG_TEST_ES_URL is not set")
    else:
        url = request.getfixturevalue("noida_server").url
    # rrf: `similar` from FAISS beside the cluster (the default); client fusion: from the cluster's kNN
    client_fusion = request.param.endswith("client-fusion")
    settings = es_settings(url, hybrid="client" if client_fusion else "auto")
    neighbours = None if client_fusion else Neighbours(tmp_path / "neighbours", DIMS)
    es_backend = ESBackend(settings, DIMS, numeric=NUMERIC, neighbours=neighbours)
    yield es_backend
    es_backend.close()
    drop_alias(settings)
