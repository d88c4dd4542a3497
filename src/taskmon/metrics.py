"""Prometheus metrics. Under gunicorn they aggregate across workers (multiprocess mode).

The gunicorn config sets PROMETHEUS_MULTIPROC_DIR before any worker imports this module; a
plain process (tests, `flask run`) uses the default registry. The metrics defined here are
per process (summed over a master's workers); the global figures read from Redis at scrape
time are a collector passed to `exposition` (taskmon.global_metrics), collected once per
scrape by the worker that answers it. docs/metrics.md lists every metric.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector

TASKS_SUBMITTED = Counter(
    "taskmon_tasks_submitted", "POST /api/tts answers by outcome", ["outcome"]
)
TASKS_FINISHED = Counter(
    "taskmon_tasks_finished", "Tasks that reached a terminal state", ["state", "code"]
)
SYNTHESIS_SECONDS = Histogram(
    "taskmon_synthesis_seconds",
    "Time the engine took per task, permit held",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
PERMIT_WAIT_SECONDS = Histogram(
    "taskmon_permit_wait_seconds",
    "Time a task waited for a concurrency permit",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
TASKS_PENDING = Gauge(
    "taskmon_tasks_pending",
    "Tasks accepted by a worker and not finished",
    multiprocess_mode="livesum",
)
SYNTHESES_RUNNING = Gauge(
    "taskmon_syntheses_running", "Syntheses running (permit held)", multiprocess_mode="livesum"
)
PERMITS_LOST = Counter(
    "taskmon_permits_lost", "Permits whose lease ended while their holder still ran"
)

DEGRADED = Gauge(
    "taskmon_degraded",
    "Workers running on their own memory because Redis does not answer",
    multiprocess_mode="livesum",
)
FAILOVER_SWITCHES = Counter(
    "taskmon_failover_switches", "Switches between Redis and memory, by direction", ["to"]
)
WRITTEN_BACK = Counter(
    "taskmon_written_back", "Tasks and permits written back to Redis after an outage", ["what"]
)

SSE_STREAMS_OPEN = Gauge(
    "taskmon_sse_streams_open", "SSE streams open now", multiprocess_mode="livesum"
)
SSE_STREAMS_REFUSED = Counter(
    "taskmon_sse_streams_refused",
    "SSE streams refused with 503 because the worker had TASKMON_SSE_MAX_STREAMS open",
)


HTTP_REQUEST_SECONDS = Histogram(
    "taskmon_http_request_duration_seconds",
    "Time from a request's arrival to its answer's headers (an SSE stream: to its first byte)",
    ["endpoint", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def exposition(collectors: Sequence[Collector] = ()) -> tuple[bytes, str]:
    """The metrics page body and its content type: the per-process metrics (summed over
    workers under gunicorn) and `collectors`, collected once, here, never summed."""
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest() + generate_latest(registry), CONTENT_TYPE_LATEST
