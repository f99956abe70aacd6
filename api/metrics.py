"""Prometheus metrics of one app, in a registry of its own (several apps may share a process)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Sampling 1 to 1000 molecules takes milliseconds to seconds.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "molgan_http_requests", "HTTP requests answered.", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "molgan_http_request_duration_seconds", "Time to answer an HTTP request.", ["method", "route"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.in_progress = Gauge("molgan_http_requests_in_progress", "Requests being answered.", registry=r)
        # Generation is counted per model: each has its own validity.
        self.samples_drawn = Counter("molgan_samples_drawn", "Raw graphs sampled.", ["model"], registry=r)
        self.molecules = Counter("molgan_molecules_generated", "Molecules returned by /v1/generate.",
                                 ["model"], registry=r)
        self.molecules_valid = Counter(
            "molgan_molecules_valid", "Valid molecules returned by /v1/generate.", ["model"], registry=r
        )
        self.valid_rate = Gauge(
            "molgan_valid_rate", "Valid fraction of the molecules returned since start.", ["model"],
            registry=r,
        )
        self.rejected = Counter(
            "molgan_rejected_requests", "Requests refused because the server was busy or timed out.",
            ["reason"], registry=r,
        )
        self.queue = Gauge("molgan_work_pending", "Sampling jobs queued or running.", registry=r)
        self._returned: dict[str, int] = {}
        self._valid: dict[str, int] = {}

    def add_models(self, names: list[str]) -> None:
        """Start each served model's series at 0, so that a dashboard sees every model at once."""
        for name in names:
            self.record_generation(name, 0, 0, 0)

    def record_generation(self, model: str, sampled: int, returned: int, valid: int) -> None:
        self.samples_drawn.labels(model).inc(sampled)
        self.molecules.labels(model).inc(returned)
        self.molecules_valid.labels(model).inc(valid)
        # Called on the event loop only, so these running totals need no lock.
        self._returned[model] = returned_so_far = self._returned.get(model, 0) + returned
        self._valid[model] = valid_so_far = self._valid.get(model, 0) + valid
        self.valid_rate.labels(model).set(valid_so_far / returned_so_far if returned_so_far else 0.0)


class MetricsMiddleware:
    """Counts and times every HTTP request by route template (not by raw path, which clients choose)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.in_progress.dec()
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, label, str(status)).inc()
            self.metrics.latency.labels(method, label).observe(time.perf_counter() - started)
