"""The global figures on /metrics: a prometheus_client collector that reads the shared store
at scrape time, once per scrape, in the worker that answers it.

Under gunicorn the per-process metrics are summed over workers (multiprocess mode); these are
not: they are the store's own figures, the same from every worker, so they are collected on
the scrape's registry beside MultiProcessCollector and never written to the shared files.

A scrape never hangs and never fails on Redis: a degraded worker (Redis away) answers at once
with `taskmon_redis_up 0`; otherwise each read is bounded by the client's call budget and a
failure gives the same answer. The global figures are then left out (not zero: zero would
read as "no tasks"). The first failure of an outage is logged once; the next success says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from taskmon.ports import BackendUnavailable, FigureSource, GlobalFigures, KeyspaceFigures

log = logging.getLogger(__name__)

# Every global figure is named taskmon_global_*: a series Prometheus must not sum over the
# workers or hosts that report it (each reports the same value), unlike taskmon_* ones.
PREFIX = "taskmon_global_"


class GlobalCollector:
    """Collects the global figures from `source`; `redis_up` and the scrape's duration always.

    `degraded()` says the worker already knows Redis is away (its failover tripped, or it
    started on memory): nothing is read then. `on_unavailable` hears of a read that failed
    (the failover trips on it, as on any Redis call). Any other error of a read is logged
    the same way and answered the same (a scrape must not fail).
    """

    def __init__(
        self,
        source: FigureSource | None,
        degraded: Callable[[], bool],
        on_unavailable: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._source = source
        self._degraded = degraded
        self._on_unavailable = on_unavailable
        self._lock = threading.Lock()
        self._in_outage = False

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        read = self._read()
        if read is not None:
            yield from _figures(*read)
        yield _gauge(
            "taskmon_redis_up", "1 when the shared Redis answered this scrape", read is not None
        )
        yield _gauge(
            PREFIX + "scrape_duration_seconds",
            "How long reading the global figures took in this scrape",
            time.perf_counter() - started,
        )

    def _read(self) -> tuple[GlobalFigures, KeyspaceFigures | None] | None:
        if self._source is None or self._degraded():
            self._outage("the worker runs degraded (Redis away)")
            return None
        try:
            read = self._source.read(), self._source.keyspace()
        except Exception as exc:  # a scrape must never fail: any error is "Redis not up"
            self._outage(f"{type(exc).__name__}: {exc}")
            if isinstance(exc, BackendUnavailable) and self._on_unavailable is not None:
                self._on_unavailable(exc)
            return None
        with self._lock:
            was, self._in_outage = self._in_outage, False
        if was:
            log.info("/metrics reads the global figures from Redis again")
        return read

    def _outage(self, why: str) -> None:
        with self._lock:
            was, self._in_outage = self._in_outage, True
        if not was:
            log.warning(
                "/metrics cannot read the global figures (%s): exporting taskmon_redis_up 0 "
                "and leaving the taskmon_global_* figures out until Redis answers; check "
                "TASKMON_REDIS_URL and Redis",
                why,
            )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def _figures(figures: GlobalFigures, keyspace: KeyspaceFigures | None) -> Iterator[Metric]:
    counts = figures.counts
    live = GaugeMetricFamily(
        PREFIX + "tasks", "Tasks in a live state now, every worker's", labels=["state"]
    )
    live.add_metric(["queued"], counts.queued)
    live.add_metric(["running"], counts.running)
    yield live
    finished = CounterMetricFamily(
        PREFIX + "tasks_finished",
        "Tasks that reached done or failed since the store began (reaped ones included)",
        labels=["state"],
    )
    finished.add_metric(["done"], counts.done)
    finished.add_metric(["failed"], counts.failed)
    yield finished
    if counts.success_rate is not None:
        yield _gauge(
            PREFIX + "success_rate",
            "done / (done + failed) since the store began",
            counts.success_rate,
        )
    yield _gauge(
        PREFIX + "concurrency_in_use", "Permits held under unexpired leases", figures.in_use
    )
    if figures.limit is not None:
        yield _gauge(PREFIX + "concurrency_limit", "The cap every worker obeys", figures.limit)
    yield _gauge(
        PREFIX + "permit_waiters", "Tasks queued for a permit (live waiters)", figures.waiters
    )
    yield _gauge(
        PREFIX + "workers_alive", "Workers whose heartbeat has not expired", figures.workers_alive
    )
    yield _gauge(
        PREFIX + "oldest_queued_task_age_seconds",
        "Age of the oldest task still queued (not yet running); 0 when none is",
        figures.oldest_queued_age_s or 0.0,
    )
    if keyspace is not None:
        yield _gauge(PREFIX + "namespace_keys", "Keys in the namespace", keyspace.keys)
        yield _gauge(PREFIX + "task_keys", "Task hashes kept (live and retained)", keyspace.tasks)
        yield _gauge(
            PREFIX + "idempotency_keys", "Idempotency-Keys kept", keyspace.idempotency_keys
        )
        yield _gauge(
            PREFIX + "namespace_keys_age_seconds",
            "How old the key count is (one pass shared for a while by every worker)",
            keyspace.age_s,
        )
