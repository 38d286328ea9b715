"""Prometheus metrics: request count and latency by operationId and status, requests in flight; jobs.

Jobs: the worker observes each attempt it finishes with `observe_job(kind, outcome, seconds)`
(a duration histogram, and a failure counter by kind). The queue's depth by kind and status and
the age of the oldest due queued job are not counted as they change: they are read from the
database when `/metrics` is scraped (`QueueCollector`, one grouped count over the job table's
`(status, run_at)` index), so every server answers the same numbers whoever ran the jobs.

With several worker processes (`tenantry serve --workers N`), prometheus_client's multiprocess
mode is used (`PROMETHEUS_MULTIPROC_DIR`, set by the CLI), so `/metrics` adds up every worker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
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
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("tenantry.metrics")

_MAX_CACHED = 1000
#: Job attempts last from milliseconds (a webhook) to many minutes (a purge, an export).
_JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: Attempt outcomes that count as failures.
_FAILED = frozenset({"failed", "lost", "dead", "timeout"})


class JobMetrics:
    """What the worker observes of the jobs it runs: attempt durations, and failures by kind."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "tenantry_job_duration_seconds",
            "Time a job attempt ran, by kind and outcome.",
            ["kind", "outcome"],
            buckets=_JOB_BUCKETS,
            registry=registry,
        )
        self.failures = Counter(
            "tenantry_job_failures_total",
            "Job attempts that failed (failed, lost, timed out or dead), by kind.",
            ["kind"],
            registry=registry,
        )

    def observe(self, kind: str, outcome: str, seconds: float) -> None:
        """Records one finished attempt of a job of `kind`."""
        self.duration.labels(kind, outcome).observe(seconds)
        if outcome in _FAILED:
            self.failures.labels(kind).inc()


_jobs: JobMetrics | None = None
_jobs_registry: CollectorRegistry | None = None


def job_metrics() -> JobMetrics:
    """Returns this process's job metrics, made on first use (the server's `/metrics` shows them, and
    with PROMETHEUS_MULTIPROC_DIR shared with the worker processes, theirs too)."""
    global _jobs, _jobs_registry
    if _jobs is None:
        _jobs_registry = CollectorRegistry(auto_describe=True)
        _jobs = JobMetrics(_jobs_registry)
    return _jobs


def serve_job_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serves this process's job metrics (attempt durations, failures by kind) for Prometheus on
    host:port (`tenantry worker --metrics-port`): a worker runs its jobs apart from the API's
    processes, whose `/metrics` shows the queue (depth, oldest wait) read from the database."""
    from prometheus_client import start_http_server

    job_metrics()
    assert _jobs_registry is not None  # made by job_metrics()
    start_http_server(port, addr=host, registry=_jobs_registry)


def observe_job(kind: str, outcome: str, seconds: float) -> None:
    """Records one finished job attempt: its kind, outcome (`succeeded`, `failed`, `lost`, `cancelled`, ...)
    and how long it ran. Called by the worker."""
    job_metrics().observe(kind, outcome, seconds)


#: What QueueCollector reads at each scrape: ([(kind, status, count)], [(kind, seconds the oldest due
#: queued job has waited)]).
QueueReader = Callable[[], tuple[list[tuple[str, str, int]], list[tuple[str, float]]]]


class QueueCollector:
    """The job queue's depth and oldest due job's age, read from the database at scrape time."""

    def __init__(self, read: QueueReader) -> None:
        self.read = read

    def describe(self) -> list[Any]:
        # Described without reading: registering the collector must not touch the database.
        return [self._depth(), self._age()]

    def collect(self) -> Iterator[Any]:
        depth, age = self._depth(), self._age()
        try:
            counts, ages = self.read()
        except Exception:  # a scrape must answer even when the database does not: /health/ready says why
            log.warning("job queue metrics: the database could not be read", exc_info=True)
            counts, ages = [], []
        for kind, status, count in counts:
            depth.add_metric([kind, status], count)
        for kind, seconds in ages:
            age.add_metric([kind], seconds)
        yield depth
        yield age

    @staticmethod
    def _depth() -> Any:
        return GaugeMetricFamily(
            "tenantry_job_queue_depth", "Jobs not yet final, by kind and status.", labels=["kind", "status"]
        )

    @staticmethod
    def _age() -> Any:
        return GaugeMetricFamily(
            "tenantry_job_oldest_due_seconds",
            "How long the oldest due queued job of each kind has waited to start.",
            labels=["kind"],
        )


_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The process's request metrics, registered once per app."""

    def __init__(self, queue: QueueReader | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        #: The job queue's collector (the app passes the database reader); kept to add it per scrape
        #: in multiprocess mode too.
        self.queue = QueueCollector(queue) if queue is not None else None
        if self.queue is not None:
            self.registry.register(self.queue)
        job_metrics()
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
            if self.queue is not None:
                registry.register(self.queue)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        body = generate_latest(self.registry)
        if _jobs_registry is not None:
            body += generate_latest(_jobs_registry)
        return body, CONTENT_TYPE_LATEST
