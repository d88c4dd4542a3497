"""The backend one worker runs on: the adapters of memory mode, of Redis, or of Redis with the
failover layer behind it, chosen from the settings at start, and what must close at exit.

`select_backend(settings, worker_id, boot)` is the only place that opens Redis clients and
builds the Redis adapters; `taskmon.runtime` wires a TaskService over what it returns.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import redis

from taskmon import metrics
from taskmon.config import BackendMode, Settings
from taskmon.domain import ErrorCode
from taskmon.failover import (
    Failover,
    FailoverSemaphore,
    FailoverTaskMonitor,
    OutageLogFilter,
    ShareInputs,
    rank_of,
)
from taskmon.global_metrics import GlobalCollector
from taskmon.memory import InMemoryEventHub, InMemorySemaphore, InMemoryTaskMonitor
from taskmon.ports import BackendUnavailable, Semaphore, TaskMonitor
from taskmon.redis.connection import call_budget_s, make_client, redacted
from taskmon.redis.diagnosis import diagnose, refused_by_acl
from taskmon.redis.epoch import EpochWatch
from taskmon.redis.figures import RedisFigures
from taskmon.redis.hub import RedisEventHub
from taskmon.redis.keys import Keys
from taskmon.redis.monitor import RedisTaskMonitor, load_task
from taskmon.redis.semaphore import WAITER_TTL_RETRIES, RedisSemaphore
from taskmon.redis.subscriber import RedisSubscriber
from taskmon.redis.workers import Maintenance, Reaper, WorkerRegistry

log = logging.getLogger(__name__)

# A permit waiter re-runs the acquire script at least this often without a wake-up.
_PERMIT_RETRY_S = 1.0
# How long a worker remembers its own finished tasks in memory, for reads while degraded.
_MIRROR_TTL_S = 900
# A degraded worker probes Redis at least this often (full jitter below it).
_MAX_PROBE_BACKOFF_S = 1.0


def close_all(closers: list[Callable[[], None]]) -> None:
    """Run every closer in order; one that fails is logged and does not stop the others."""
    for close in closers:
        try:
            close()
        except Exception:
            log.exception("closing %s failed", close)


@dataclass
class Backend:
    """The adapters of one backend, and what must be closed when the worker exits."""

    monitor: TaskMonitor
    semaphore: Semaphore
    closers: list[Callable[[], None]] = field(default_factory=list)
    target: str = "in-process"
    reaper: Reaper | None = None
    failover: Failover | None = None
    registry: WorkerRegistry | None = None
    # Running on memory although Redis was configured (auto mode, Redis away at start).
    degraded: bool = False
    figures: RedisFigures | None = None

    def collectors(self) -> list[GlobalCollector]:
        """The global figures' collector: Redis read at scrape time, or (auto mode, Redis
        away at start) one that says Redis is not up; none in memory mode."""
        if self.figures is not None and self.failover is not None:
            failover = self.failover
            return [GlobalCollector(self.figures, lambda: failover.degraded, failover.trip)]
        return [GlobalCollector(None, lambda: True)] if self.degraded else []


def _memory_backend(settings: Settings) -> Backend:
    monitor = InMemoryTaskMonitor(hub=InMemoryEventHub(), ttl_s=settings.task_ttl_s)
    semaphore = InMemorySemaphore(settings.concurrency_limit, lease_ttl_s=settings.lease_ttl_s)
    return Backend(monitor, semaphore, [monitor.close])


def select_backend(settings: Settings, worker_id: str, boot: str = "") -> Backend:
    """Memory, Redis, or (auto) Redis when it answers now and memory with a WARNING otherwise.

    Raises BackendUnavailable when TASKMON_BACKEND=redis and Redis does not answer: the
    worker must not serve a promise (one global cap) it cannot keep. This is where a failover
    layer composing both backends behind the same ports slots in.
    """
    if settings.backend is BackendMode.MEMORY:
        return _memory_backend(settings)
    if settings.redis_url is None:  # so the mode is auto: Settings refuses redis without one
        log.warning(
            "TASKMON_REDIS_URL is not set: running on the in-memory backend. Each worker keeps "
            "its own tasks, idempotency keys and cap: status reads may 404 on other workers and "
            "up to workers x TASKMON_CONCURRENCY_LIMIT syntheses may run at once."
        )
        return _memory_backend(settings)
    url = redacted(settings.redis_url.get_secret_value())
    try:
        return _redis_backend(settings, worker_id, boot, target=url)
    except (redis.RedisError, OSError, BackendUnavailable) as exc:
        found = diagnose(exc, url, key_prefix=settings.key_prefix)
        if settings.backend is BackendMode.REDIS:
            raise BackendUnavailable(
                f"TASKMON_BACKEND=redis but {found.problem}; {found.todo}, "
                "or set TASKMON_BACKEND=auto to fall back to memory"
            ) from None
        log.warning(
            "%s: running on the in-memory backend (%s, then restart). Lost until a restart "
            "with Redis up: task state, idempotency and statistics shared between workers, "
            "cross-worker live events, and the global cap (each worker applies "
            "TASKMON_CONCURRENCY_LIMIT alone).",
            found.problem,
            found.todo,
        )
        fallback = _memory_backend(settings)
        fallback.degraded = True
        return fallback


def _warn_on_eviction(client: redis.Redis, target: str) -> None:
    """An allkeys-* policy may evict the semaphore's keys, which have no TTL: say so.

    A Redis that refuses CONFIG GET (an ACL user without it, as deploy/redis/taskmon.acl
    ships, or a managed Redis that renamed CONFIG) skips the check with one INFO line: the
    start goes on. Any other failure surfaces at the next call.
    """
    try:
        policy = str(client.config_get("maxmemory-policy").get("maxmemory-policy", ""))
    except redis.ResponseError as exc:
        why = "this user may not run CONFIG GET" if refused_by_acl(exc) else str(exc)
        log.info(
            "Redis at %s: maxmemory-policy not checked (%s); make sure it is noeviction, or "
            "the semaphore's keys may be evicted under memory pressure",
            target,
            why,
        )
        return
    except redis.RedisError:
        return  # an outage: the next call meets it, and the failover layer handles it
    if policy.startswith("allkeys"):
        log.warning(
            "Redis at %s has maxmemory-policy %s: under memory pressure it may evict the "
            "semaphore's holders and break the global cap. Use noeviction (see "
            "docs/deployment.md)",
            target,
            policy,
        )


def _redis_backend(settings: Settings, worker_id: str, boot: str, target: str) -> Backend:
    # What was opened, in the order to close it: a build that fails half way closes it all.
    opened: list[Callable[[], None]] = []
    try:
        client = make_client(settings, client_name=f"taskmon:{worker_id}")
        opened.insert(0, client.close)
        client.ping()
        _warn_on_eviction(client, target)
        keys = Keys(settings.key_prefix)
        sub_client = make_client(
            settings, client_name=f"taskmon-sub:{worker_id}", max_connections=2
        )
        opened.insert(0, sub_client.close)
        subscriber = RedisSubscriber(sub_client)
        opened.insert(0, subscriber.close)
        hub = RedisEventHub(client, keys, subscriber, snapshot=partial(load_task, client, keys))
        monitor = RedisTaskMonitor(client, keys, hub=hub, ttl_s=settings.task_ttl_s)
        opened.insert(0, monitor.close)
        semaphore = RedisSemaphore(
            client,
            keys,
            default_limit=settings.concurrency_limit,
            lease_ttl_s=settings.lease_ttl_s,
            subscriber=subscriber,
            retry_interval_s=_PERMIT_RETRY_S,
            # A waiter stays queued through three retries, each of which may take the
            # client's whole call budget on a slow Redis.
            waiter_ttl_s=WAITER_TTL_RETRIES * (_PERMIT_RETRY_S + call_budget_s(settings)),
        )
        # The service closes it first, at shutdown; here too, for a build that fails.
        opened.insert(0, semaphore.close)
        # One cap for every worker: the newest configuration's, unless an operator set one
        # live (PUT /api/admin/concurrency).
        semaphore.configure_limit()
        registry = WorkerRegistry(
            client,
            keys,
            worker_id,
            ttl_s=settings.lease_ttl_s,
            retention_s=settings.task_ttl_s,
            boot=boot,
        )
        epoch = EpochWatch(client, keys)
        epoch.changed()  # the first look: the dataset this worker starts on
        quiet = OutageLogFilter(lambda: failover.degraded)
        failover = Failover(
            target=target,
            policy=settings.fallback_policy.value,
            probe=partial(_probe, client, keys, registry),
            store_lost=epoch.changed,
            on_promoted=quiet.outage_over,
            # Two probe intervals at most: every worker has written back by then.
            settle_s=2 * _MAX_PROBE_BACKOFF_S + call_budget_s(settings),
            announce=lambda: registry.mark_promoted(epoch.seen),
            not_back=registry.others_not_back,
            max_backoff_s=_MAX_PROBE_BACKOFF_S,
        )
        maintenance = Maintenance(
            registry,
            Reaper(client, keys, registry, monitor),
            interval_s=settings.lease_ttl_s / 3,
            on_unavailable=failover.trip,
        )
        maintenance.start()  # registers this worker first: the share is read from the registry
        opened.insert(0, maintenance.close)
        degradable_monitor = FailoverTaskMonitor(monitor, failover, mirror_ttl_s=min(
            settings.task_ttl_s, _MIRROR_TTL_S))  # fmt: skip
        degradable_semaphore = FailoverSemaphore(
            semaphore,
            failover,
            default_limit=settings.concurrency_limit,
            share_inputs=partial(_share_inputs, registry, settings),
        )
        # The subscriber's connection is often the first to see Redis go (a reset).
        subscriber.on_lost(failover.trip)
        quiet.install()
        opened.insert(0, quiet.uninstall)
        failover.start()
        opened.insert(0, failover.close)
        subscriber.start()
    except BaseException:
        close_all(opened)
        raise
    # Closed in this order: stop probing, stop reaping, stop waiting and listening, then drop
    # the pools.
    maintenance.reaper.unsynced = degradable_monitor.unsynced_ids
    maintenance.reaper.on_abandoned = _count_reaped
    return Backend(
        degradable_monitor,
        degradable_semaphore,
        opened,
        target=target,
        reaper=maintenance.reaper,
        failover=failover,
        figures=RedisFigures(client, keys),
        registry=registry,
    )


def _count_reaped(count: int) -> None:
    """Tasks a reaper failed `abandoned` are finishes too; their own worker cannot count them."""
    metrics.TASKS_FINISHED.labels("failed", ErrorCode.ABANDONED.value).inc(count)


def _probe(client: redis.Redis, keys: Keys, registry: WorkerRegistry) -> None:
    """Raise BackendUnavailable unless Redis takes a write now: a replica that refuses writes
    (READONLY) or an instance out of memory answers PING, and would make a worker flap.

    The write is this worker's heartbeat, and it lands before anything is written back: a
    worker only cut off from Redis (the others kept it) has had its heartbeat lapse, and a
    task written back before the heartbeat would be failed `abandoned` by another worker's
    reaper the moment it appears.
    """
    try:
        client.set(keys.epoch, uuid.uuid4().hex, nx=True)
    except (redis.RedisError, OSError) as exc:
        raise BackendUnavailable(f"Redis does not take a write ({exc})") from None
    registry.heartbeat()


def _share_inputs(registry: WorkerRegistry, settings: Settings, limit: int) -> ShareInputs:
    """The partition policy's inputs: this worker's rank among the live workers of every
    host (by full identity: two processes of one name are two workers), out of
    TASKMON_WORKERS (or the live count). Until the registry lists that many, gunicorn's own
    slot for this worker stands in for the rank."""
    alive = registry.alive()
    workers = settings.workers or max(1, len(alive))
    rank = rank_of(registry.identity, alive)
    if rank is None or len(set(alive)) < workers:
        rank = settings.worker_index if settings.worker_index is not None else (rank or 0)
    return ShareInputs(limit=limit, index=rank, workers=workers)
