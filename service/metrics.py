"""Prometheus metrics of one service instance, in its own registry (never the global default), so any
number of apps can live in one process (tests) without clashing."""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shoptag.tagger.model import TagDecision

# request latency buckets (seconds): sub-millisecond reads up to multi-second batch writes
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServiceMetrics:
    """The service's counters, gauges and histograms."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "shoptag_request_duration_seconds", "HTTP request latency by route template, method and status.",
            ["route", "method", "status"], buckets=BUCKETS, registry=self.registry,
        )
        self.index_size = Gauge("shoptag_index_products", "Products in the search index.", registry=self.registry)
        self.store_size = Gauge("shoptag_store_products", "Products in the store.", registry=self.registry)
        self.tags = Counter("shoptag_tags_emitted", "Model tags written by the service, by family and status.",
                            ["family", "status"], registry=self.registry)
        self.products = Counter("shoptag_products", "Products added (or replaced) and deleted through the service.",
                                ["op"], registry=self.registry)
        self.rejects = Counter("shoptag_rejected_products", "Products refused by validation.", registry=self.registry)
        self.feedback = Counter("shoptag_feedback_items", "Corrections applied through the service.",
                                registry=self.registry)
        self.review_decisions = Gauge("shoptag_review_decisions", "Review decisions that stand, by family and action.",
                                      ["family", "action"], registry=self.registry)
        self.review_agreement = Gauge("shoptag_review_agreement", "Share of review decisions that agree with the "
                                      "model's top candidate, by family.", ["family"], registry=self.registry)
        self.review_queue = Gauge("shoptag_review_queue", "Items waiting for review, by family.", ["family"],
                                  registry=self.registry)
        self.retrains = Counter("shoptag_review_retrains", "Scheduled `train --if-better` runs, by verdict.",
                                ["verdict"], registry=self.registry)
        self.review_pace = Gauge("shoptag_review_decisions_per_hour", "Review decisions per hour over the last hour.",
                                 registry=self.registry)
        self.events = Counter("shoptag_events", "Shopper events stored through the service.", registry=self.registry)
        self.tag_units = Gauge("shoptag_tag_units", "Units sold per tag value in the last `behaviour.trend_days` "
                               "(window=recent) and the window before (window=previous).",
                               ["family", "value", "window"], registry=self.registry)

    def reviewed(self, stats: dict) -> None:
        """Reviewer metrics from `pipeline.review.stats`, read from the store at each scrape (so they hold the
        decisions of every process, the CLI's too)."""
        for gauge in (self.review_decisions, self.review_agreement, self.review_queue):
            gauge.clear()
        for family, f in stats["families"].items():
            for action in ("accept", "correct", "reject"):
                self.review_decisions.labels(family, action).set(f[action])
            self.review_agreement.labels(family).set(f["agreement"])
        for family, count in stats["queue"].items():
            self.review_queue.labels(family).set(count)
        self.review_pace.set(stats["per_hour"])

    def tagged(self, decisions: Iterable[list[TagDecision]]) -> None:
        for tags in decisions:
            for d in tags:
                self.tags.labels(d.family, d.status).inc()

    def sizes(self, store_products: int, index_products: int) -> None:
        self.store_size.set(store_products)
        self.index_size.set(index_products)

    def demand(self, rows: Iterable[tuple[str, str, float, float]]) -> None:
        """Per tag value: (family, value, units recently, units in the window before)."""
        for family, value, recent, previous in rows:
            self.tag_units.labels(family, value, "recent").set(recent)
            self.tag_units.labels(family, value, "previous").set(previous)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestTimer:
    """ASGI middleware timing every request under its route template (`/similar/{product_id}`, not the id, so
    label values stay few); requests no route matched count as `unmatched`."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            self.metrics.latency.labels(
                getattr(route, "path_format", "unmatched"), scope["method"], str(status)
            ).observe(time.perf_counter() - start)
