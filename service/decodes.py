"""A bound on the images the service decodes at once: concurrent `POST /products` with big images would
otherwise each hold a decoded image (up to catalog.max_image_pixels × 4 bytes) at the same time."""

from __future__ import annotations

import threading
from types import TracebackType


class DecodeGate:
    """At most `limit` decodes at once across the request threads (sync routes run in the server's
    threadpool, never on the event loop); counts those in flight and the most there ever were."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._count = threading.Lock()
        self.in_flight = 0
        self.peak = 0

    def __enter__(self) -> DecodeGate:
        self._slots.acquire()
        with self._count:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        with self._count:
            self.in_flight -= 1
        self._slots.release()
