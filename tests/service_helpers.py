"""Helpers for the service tests: a small trained workspace, and the real service on a loopback port, run
either in a thread of the test process (uvicorn.Server) or as a `shoptag serve` process that can be killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from loopback import free_port, wait_until_ok
from shoptag.core.settings import Settings
from shoptag.pipeline.encode import Encoders
from shoptag.pipeline.ingest import ingest
from shoptag.pipeline.search_sync import open_search
from shoptag.pipeline.tag import tag
from shoptag.pipeline.train import train
from shoptag.pipeline.workspace import Workspace
from shoptag.service.app import create_app

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample_catalog.jsonl"
API_KEY = "test-api-key"
START_TIMEOUT = 180.0  # seconds for a server to load its encoder and answer /healthz


def service_settings(workspace: Path) -> Settings:
    """Multilingual encoder (Chinese + English sample), a quick tagger fit, tight limits so tests can hit them."""
    return Settings(
        workspace=workspace,
        encoders={"text_model": "use-multilingual"},
        tagger={"head_epochs": 3, "head_patience": 2, "lexical": False},
        service={"api_key": API_KEY, "max_batch": 8, "max_body_bytes": 64_000, "image_root": SAMPLE.parent},
    )


def build_workspace(settings: Settings, *, trained: bool = True, catalog: Path = SAMPLE) -> None:
    """The catalog (default: the sample) ingested and, when `trained`, trained, tagged and indexed."""
    store = Workspace(settings.workspace).open_store()
    try:
        ingest(settings, store, catalog, show_progress=False)
        if trained:
            encoders = Encoders(settings.encoders)
            train(settings, store, encoders, show_progress=False)
            backend = open_search(settings, encoders)
            try:
                tag(settings, store, encoders, backend, show_progress=False)
            finally:
                backend.close()
    finally:
        store.close()


def wait_healthy(base_url: str, alive: Callable[[], bool]) -> None:
    wait_until_ok(f"{base_url}/healthz", alive, START_TIMEOUT, interval=0.25)


@contextmanager
def thread_server(settings: Settings) -> Iterator[str]:
    """`create_app(settings)` served by uvicorn in a thread; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base_url, thread.is_alive)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes `shoptag serve` use `settings` (the fields these tests set)."""
    service = settings.service
    return {
        **os.environ,
        "SHOPTAG_WORKSPACE": str(settings.workspace),
        "SHOPTAG_ENCODERS__TEXT_MODEL": settings.encoders.text_model,
        "SHOPTAG_SERVICE__API_KEY": service.api_key.get_secret_value() if service.api_key else "",
        "SHOPTAG_SERVICE__MAX_BATCH": str(service.max_batch),
        "SHOPTAG_SERVICE__MAX_BODY_BYTES": str(service.max_body_bytes),
        "SHOPTAG_SERVICE__IMAGE_ROOT": str(service.image_root or ""),
        "SHOPTAG_CONFIG": "",
        "HF_HUB_OFFLINE": "1",
    }


class ServiceProcess:
    """`shoptag serve` in its own process, so a test can kill it the hard way (SIGKILL: no shutdown code runs)."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        with (settings.workspace / "serve.log").open("ab") as log:  # the child keeps its own copy of the file
            self.process = subprocess.Popen(
                [str(Path(sys.executable).with_name("shoptag")), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=settings_env(settings), cwd=settings.workspace, stdout=subprocess.DEVNULL, stderr=log,
            )
        try:
            wait_healthy(self.base_url, lambda: self.process.poll() is None)
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
