"""Prometheus metrics: request count and latency by operationId and status, requests in flight.

With several worker processes (`tenantry serve --workers N`), prometheus_client's multiprocess
mode is used (`PROMETHEUS_MULTIPROC_DIR`, set by the CLI), so `/metrics` adds up every worker.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_MAX_CACHED = 1000
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The process's request metrics, registered once per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tenantry_requests_total",
            "Requests answered, by operation and status.",
            ["operation", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tenantry_request_duration_seconds",
            "Time to answer a request, by operation and status.",
            ["operation", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "tenantry_requests_in_flight",
            "Requests being served right now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        # Each (operation, method, status) resolves its counter and histogram children once:
        # `labels()` re-validates and hashes the label values on every call.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, operation: str, method: str, status: int, seconds: float) -> None:
        """Counts one answered request and its latency."""
        key = (operation, method, status)
        children = self._children.get(key)
        if children is None:
            label = str(status)
            children = (self.requests.labels(operation, method, label), self.latency.labels(operation, label))
            if len(self._children) < _MAX_CACHED:  # the method is the client's: bound what is kept
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """Returns the exposition text and its content type, summed over workers when there are several."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
