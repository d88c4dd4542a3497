"""A Redis that answers but refuses writes: a replica after a failover (READONLY), or one at
maxmemory with noeviction (OOM). Every adapter reports it as BackendUnavailable, the expected
outage, never as an error that reaches a generic handler and its traceback."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from taskmon.harness.redis_server import RedisServer
from taskmon.memory import InMemoryTaskMonitor
from taskmon.ports import BackendUnavailable, Holder
from taskmon.redis.keys import Keys
from taskmon.redis.workers import Maintenance, Reaper, WorkerRegistry
from tests.support.redis_wiring import MonitorWiring, SemaphoreWiring, wire_monitor, wire_semaphore
from tests.support.tasks import make_task

pytestmark = pytest.mark.redis


@dataclass
class Refusing:
    monitor: MonitorWiring
    semaphore: SemaphoreWiring
    registry: WorkerRegistry
    admin: redis.Redis


def refuse_writes(admin: redis.Redis, how: str) -> Callable[[], object]:
    """Make the server refuse writes; returns how to undo it."""
    if how == "read-only":
        admin.replicaof("127.0.0.1", "1")  # a replica of nothing: READONLY to every write
        return lambda: admin.replicaof("NO", "ONE")
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")  # always over: OOM to every write
    return lambda: admin.config_set("maxmemory", "0")


@pytest.fixture(params=["read-only", "out-of-memory"])
def refusing(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Refusing]:
    with RedisServer(workdir=tmp_path) as server:
        keys = Keys("refusals")
        admin = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=5)
        monitor = wire_monitor(server.url, keys)
        semaphore = wire_semaphore(server.url, keys, limit=2)
        registry = WorkerRegistry(monitor.client, keys, "host:1", ttl_s=10)
        undo = refuse_writes(admin, request.param)
        try:
            yield Refusing(monitor, semaphore, registry, admin)
        finally:
            undo()
            semaphore.close()
            monitor.close()
            admin.close()


def test_the_task_monitor_reports_refused_writes_as_unavailable(refusing: Refusing) -> None:
    monitor = refusing.monitor.monitor
    task = make_task(key="k")
    for write in (lambda: monitor.start(task), lambda: monitor.settle_start(task)):
        with pytest.raises(BackendUnavailable, match="TASKMON_REDIS_URL"):
            write()
    assert monitor.get(task.task_id) is None, "reads still answer"


def test_the_semaphore_reports_refused_writes_as_unavailable(refusing: Refusing) -> None:
    sem = refusing.semaphore.semaphore
    with pytest.raises(BackendUnavailable, match="The cap cannot be checked"):
        sem.acquire(Holder("host:1", "t"), timeout=0, token="t")
    with pytest.raises(BackendUnavailable):
        sem.set_limit(3)
    assert sem.limit() == 2, "reads still answer"


def test_the_worker_registry_reports_refused_writes_as_unavailable(refusing: Refusing) -> None:
    with pytest.raises(BackendUnavailable, match="heartbeat"):
        refusing.registry.heartbeat()


def test_maintenance_logs_a_refusal_as_one_warning_without_a_traceback(
    refusing: Refusing, caplog: pytest.LogCaptureFixture
) -> None:
    reaper = Reaper(
        refusing.monitor.client, Keys("refusals"), refusing.registry, InMemoryTaskMonitor()
    )
    maintenance = Maintenance(refusing.registry, reaper, interval_s=60)
    with caplog.at_level(logging.WARNING, logger="taskmon"):
        maintenance._safe_tick()
    records = [r for r in caplog.records if r.name.startswith("taskmon")]
    assert [r.levelname for r in records] == ["WARNING"]
    assert records[0].exc_info is None, "an expected outage is logged without a traceback"
    assert "retrying" in records[0].getMessage()
