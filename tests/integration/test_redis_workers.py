"""Worker registry and reaper against a real redis-server (I5 at the adapter level)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import redis

from taskmon.domain import Task, TaskRequest, TaskState
from taskmon.harness.processes import wait_until
from taskmon.harness.redis_server import RedisServer
from taskmon.redis.hub import RedisEventHub
from taskmon.redis.keys import Keys
from taskmon.redis.monitor import RedisTaskMonitor, load_task
from taskmon.redis.subscriber import RedisSubscriber
from taskmon.redis.workers import Maintenance, Reaper, WorkerRegistry
from tests.support.redis_wiring import wire_monitor

pytestmark = pytest.mark.redis

TTL_S = 0.5


@pytest.fixture
def monitor(redis_client: redis.Redis, keys: Keys) -> Iterator[RedisTaskMonitor]:
    subscriber = RedisSubscriber(redis_client)
    hub = RedisEventHub(
        redis_client, keys, subscriber, snapshot=partial(load_task, redis_client, keys)
    )
    monitor = RedisTaskMonitor(redis_client, keys, hub=hub, ttl_s=60)
    try:
        yield monitor
    finally:
        monitor.close()
        subscriber.close()


def _task(worker: str, text: str = "hi") -> Task:
    return Task.create(TaskRequest(text), worker=worker, now=time.time())


def test_heartbeat_keeps_a_worker_alive_and_silence_expires_it(
    redis_client: redis.Redis, keys: Keys
) -> None:
    registry = WorkerRegistry(redis_client, keys, "host:1", ttl_s=TTL_S)
    registry.heartbeat()
    assert registry.alive() == ["host:1"]
    assert registry.expired() == []
    wait_until(lambda: registry.expired() == ["host:1"], timeout=5, what="heartbeat expiry")
    assert registry.alive() == []


def test_reaper_fails_the_live_tasks_of_a_dead_worker_only(
    redis_client: redis.Redis, keys: Keys, monitor: RedisTaskMonitor
) -> None:
    dead = WorkerRegistry(redis_client, keys, "host:dead", ttl_s=TTL_S)
    alive = WorkerRegistry(redis_client, keys, "host:alive", ttl_s=60)
    dead.heartbeat()
    alive.heartbeat()
    queued = monitor.start(_task("host:dead")).task
    running = monitor.start(_task("host:dead")).task
    moved = monitor.transition(
        running.task_id, expected_version=1, state=TaskState.RUNNING, now=time.time()
    )
    assert moved is not None
    running = moved
    assert running is not None
    finished = monitor.start(_task("host:dead")).task
    monitor.transition(finished.task_id, expected_version=1, state=TaskState.RUNNING, now=1.0)
    monitor.transition(finished.task_id, expected_version=2, state=TaskState.DONE, now=2.0)
    other = monitor.start(_task("host:alive")).task

    reaper = Reaper(redis_client, keys, alive, monitor)
    assert reaper.reap_once() == []  # nobody has expired yet
    wait_until(lambda: "host:dead" in alive.expired(), timeout=5, what="dead worker expiry")
    reaped = reaper.reap_once()

    assert sorted(reaped) == sorted([queued.task_id, running.task_id])
    for task_id in reaped:
        task = monitor.get(task_id)
        assert task is not None
        assert task.state is TaskState.FAILED
        assert task.error is not None
        assert task.error.code == "abandoned"
    assert monitor.get(finished.task_id).state is TaskState.DONE  # type: ignore[union-attr]
    assert monitor.get(other.task_id).state is TaskState.QUEUED  # type: ignore[union-attr]
    assert alive.alive() == ["host:alive"], "the dead worker is forgotten once reaped"
    counts = monitor.counts()
    assert (counts.queued, counts.running, counts.failed, counts.done) == (1, 0, 2, 1)


def test_reapers_in_every_worker_fail_each_task_exactly_once(
    redis_client: redis.Redis, keys: Keys, monitor: RedisTaskMonitor
) -> None:
    dead = WorkerRegistry(redis_client, keys, "host:gone", ttl_s=TTL_S)
    dead.heartbeat()
    tasks = [monitor.start(_task("host:gone", f"t{n}")).task.task_id for n in range(10)]
    reapers = [
        Reaper(redis_client, keys, WorkerRegistry(redis_client, keys, f"host:{n}", 60), monitor)
        for n in range(3)
    ]
    wait_until(lambda: bool(dead.expired()), timeout=5, what="expiry")
    reaped = [task for reaper in reapers for task in reaper.reap_once()]
    assert sorted(reaped) == sorted(tasks)
    assert monitor.counts().failed == 10


def test_maintenance_heartbeats_and_deregisters_on_close(
    redis_client: redis.Redis, keys: Keys, monitor: RedisTaskMonitor
) -> None:
    registry = WorkerRegistry(redis_client, keys, "host:m", ttl_s=TTL_S)
    maintenance = Maintenance(registry, Reaper(redis_client, keys, registry, monitor), TTL_S / 3)
    maintenance.start()
    try:
        # Several TTLs pass: the worker must stay alive throughout thanks to the heartbeat.
        deadline = time.monotonic() + 4 * TTL_S
        while time.monotonic() < deadline:
            assert registry.alive() == ["host:m"]
            time.sleep(TTL_S / 5)
    finally:
        maintenance.close()
    assert registry.alive() == []


def test_reaper_fails_its_own_orphans_but_never_a_task_it_still_runs(
    redis_client: redis.Redis, keys: Keys, monitor: RedisTaskMonitor
) -> None:
    me = WorkerRegistry(redis_client, keys, "host:me", ttl_s=60)
    me.heartbeat()
    running_here = monitor.start(_task("host:me", "still mine")).task
    lost = monitor.start(_task("host:me", "lost in an outage")).task
    reaper = Reaper(redis_client, keys, me, monitor)
    assert reaper.reap_once() == [], "without local_tasks only dead workers are reaped"
    reaper.local_tasks = lambda: {running_here.task_id}
    assert reaper.reap_once() == [lost.task_id]
    failed = monitor.get(lost.task_id)
    assert failed is not None
    assert failed.error is not None
    assert "lost track" in failed.error.message
    assert monitor.get(running_here.task_id).state is TaskState.QUEUED  # type: ignore[union-attr]


def test_leaving_reaps_own_unheld_tasks_before_deregistering(
    redis_client: redis.Redis, keys: Keys, monitor: RedisTaskMonitor
) -> None:
    """Once it has left the registry, no other worker's reaper fails a worker's tasks."""
    registry = WorkerRegistry(redis_client, keys, "host:leaving", ttl_s=60)
    reaper = Reaper(redis_client, keys, registry, monitor)
    reaper.local_tasks = frozenset  # the service holds nothing any more at exit
    maintenance = Maintenance(registry, reaper, interval_s=3600)
    maintenance.start()
    # Its move to `running` gave up in an outage: no thread holds it, and the store says queued.
    unheld = monitor.start(_task("host:leaving", "let go in an outage")).task
    maintenance.close()
    failed = monitor.get(unheld.task_id)
    assert failed is not None
    assert failed.state is TaskState.FAILED
    assert registry.alive() == []


def test_leaving_while_redis_is_away_stays_registered(tmp_path: Path, keys: Keys) -> None:
    """Left in the registry, the worker expires and the other workers reap its tasks."""
    with RedisServer(workdir=tmp_path) as server:
        worker = wire_monitor(server.url, keys, name="leaving")
        try:
            registry = WorkerRegistry(worker.client, keys, "host:cut-off", ttl_s=60)
            reaper = Reaper(worker.client, keys, registry, worker.monitor)
            reaper.local_tasks = frozenset
            maintenance = Maintenance(registry, reaper, interval_s=3600)
            maintenance.start()
            server.stop_for_now()
            maintenance.close()  # logs and returns: neither reaped nor deregistered
            server.start()
            assert registry.alive() == ["host:cut-off"]
        finally:
            worker.close()


def test_a_task_that_appears_after_its_worker_left_is_still_reaped(
    redis_client: redis.Redis, keys: Keys, monitor: RedisTaskMonitor
) -> None:
    """A start that sat at a hung Redis as its worker exited runs when Redis wakes; the task
    belongs to nobody who runs, so the other workers' reapers must fail it."""
    leaving = WorkerRegistry(redis_client, keys, "host:left", ttl_s=60)
    leaving.heartbeat()
    leaving.leave()
    other = WorkerRegistry(redis_client, keys, "host:other", ttl_s=60)
    other.heartbeat()
    reaper = Reaper(redis_client, keys, other, monitor)
    assert reaper.reap_once() == []
    late = monitor.start(_task("host:left", "landed after its worker left")).task
    unknown = monitor.start(_task("host:never-registered", "not ours to judge")).task
    assert reaper.reap_once() == [late.task_id]
    assert monitor.get(unknown.task_id).state is TaskState.QUEUED  # type: ignore[union-attr]
    assert other.alive() == ["host:other"]


def test_expired_workers_are_dropped_after_the_retention(
    redis_client: redis.Redis, keys: Keys
) -> None:
    registry = WorkerRegistry(redis_client, keys, "host:short", ttl_s=60, retention_s=0.3)
    registry.heartbeat()
    registry.leave()
    assert registry.expired() == ["host:short"]
    wait_until(lambda: registry.expired() == [], timeout=5, what="the retention to end")
    assert redis_client.zcard(keys.workers) == 0, "and the registry does not grow"
