"""Servers the tests start on loopback: a free port, and waiting until one answers."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ok(url: str, alive: Callable[[], bool], timeout: float, interval: float = 0.2) -> None:
    """Poll `url` until it answers 200; RuntimeError if `alive()` turns False, TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server for {url} exited while starting")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(interval)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")
