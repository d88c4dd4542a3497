"""Two processes of one name (`<hostname>:<pid>`) never pass for each other (real redis-server).

Containers often run their worker as pid 7 in every boot, and two containers can share a
hostname: the registry and the reaper tell workers apart by name and boot id together.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from functools import partial

import pytest
import redis

from taskmon.domain import Task, TaskError, TaskRequest, TaskState
from taskmon.harness.processes import wait_until
from taskmon.redis.hub import RedisEventHub
from taskmon.redis.keys import Keys
from taskmon.redis.monitor import RedisTaskMonitor, load_task
from taskmon.redis.subscriber import RedisSubscriber
from taskmon.redis.workers import Maintenance, Reaper, WorkerRegistry

pytestmark = pytest.mark.redis

TTL_S = 0.6
NAME = "host:7"


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


def _task(boot: str, text: str = "hi") -> Task:
    return Task.create(TaskRequest(text), worker=NAME, now=time.time(), boot=boot)


def _state(monitor: RedisTaskMonitor, task_id: str) -> TaskState:
    task = monitor.get(task_id)
    assert task is not None
    return task.state


def _maintained(
    client: redis.Redis, keys: Keys, monitor: RedisTaskMonitor, boot: str, local: set[str]
) -> tuple[Maintenance, WorkerRegistry]:
    """A worker named NAME of this boot: heartbeat and reaper, running only `local`."""
    registry = WorkerRegistry(client, keys, NAME, ttl_s=TTL_S, boot=boot)
    reaper = Reaper(client, keys, registry, monitor)
    reaper.local_tasks = lambda: local
    return Maintenance(registry, reaper, interval_s=TTL_S / 3), registry


def test_a_restart_under_the_same_name_reaps_the_old_boots_tasks_in_time(
    redis_client: redis.Redis, keys: Keys, monitor: RedisTaskMonitor
) -> None:
    """Boot A of host:7 dies holding a task; boot B of host:7 starts at once and heartbeats.
    B's heartbeat is not A's: A expires and its task is failed within the reaper's bound
    (one TTL to expire, one TTL of the new reaper's contact, one interval to notice)."""
    old = WorkerRegistry(redis_client, keys, NAME, ttl_s=TTL_S, boot="aaaaaaaa")
    old.heartbeat()
    orphan = monitor.start(_task("aaaaaaaa", "the old boot's")).task
    died = time.monotonic()  # boot A never heartbeats again
    new, registry = _maintained(redis_client, keys, monitor, "bbbbbbbb", local=set())
    new.start()
    try:
        wait_until(
            lambda: _state(monitor, orphan.task_id) is TaskState.FAILED,
            timeout=10 * TTL_S,
            what="the old boot's task to be reaped",
        )
        elapsed = time.monotonic() - died
        failed = monitor.get(orphan.task_id)
        assert failed is not None
        assert failed.error is not None
        assert failed.error.code == "abandoned"
        # Reaped as a dead worker's, not taken by boot B for a task of its own it lost.
        assert failed.error.message == f"worker {NAME} stopped"
        assert failed.worker == NAME, "the public name is unchanged"
        assert registry.alive() == [f"{NAME}/bbbbbbbb"]
    finally:
        new.close()
    # The bound: expiry (1 TTL) and the new reaper's first TTL of contact run together, then
    # at most one maintenance interval; the rest is slack for a loaded machine.
    assert elapsed < 1.5 * TTL_S + 1.0, f"reaped {elapsed:.2f} s after the old boot died"


def test_two_live_workers_of_one_name_are_two_workers_and_reap_neither(
    redis_client: redis.Redis, keys: Keys, monitor: RedisTaskMonitor
) -> None:
    """Two containers share hostname and pid: two entries in the registry, and neither
    worker's reaper fails the other's tasks (neither as dead, nor as its own orphans)."""
    first_tasks = {monitor.start(_task("11111111", f"first {n}")).task.task_id for n in range(3)}
    second_tasks = {monitor.start(_task("22222222", f"second {n}")).task.task_id for n in range(3)}
    first, first_entry = _maintained(redis_client, keys, monitor, "11111111", first_tasks)
    second, second_entry = _maintained(redis_client, keys, monitor, "22222222", second_tasks)
    first.start()
    second.start()
    try:
        # Several TTLs: both reapers judge (a TTL of contact) several times over.
        deadline = time.monotonic() + 4 * TTL_S
        while time.monotonic() < deadline:
            for task_id in first_tasks | second_tasks:
                assert _state(monitor, task_id) is TaskState.QUEUED
            time.sleep(TTL_S / 4)
        both = [f"{NAME}/11111111", f"{NAME}/22222222"]
        assert sorted(first_entry.alive()) == both
        assert sorted(second_entry.alive()) == both
        assert first.reaper.reap_once() == []
        assert second.reaper.reap_once() == []
    finally:
        second.close()
        first.close()


def test_a_record_without_a_boot_is_judged_by_the_bare_names_heartbeat(
    redis_client: redis.Redis, keys: Keys, monitor: RedisTaskMonitor
) -> None:
    """Upgrade: an older version heartbeats the bare name and writes no boot field. Its task
    lives while that heartbeat does, and is reaped when it lapses, whoever else of that name
    (a new version's boot) is alive."""
    legacy_alive = WorkerRegistry(redis_client, keys, "host:old-alive", ttl_s=60)
    legacy_dead = WorkerRegistry(redis_client, keys, NAME, ttl_s=TTL_S)
    legacy_alive.heartbeat()
    legacy_dead.heartbeat()
    kept = monitor.start(Task.create(TaskRequest("kept"), worker="host:old-alive", now=1.0)).task
    lost = monitor.start(Task.create(TaskRequest("lost"), worker=NAME, now=1.0)).task
    for task_id in (kept.task_id, lost.task_id):
        redis_client.hdel(keys.task(task_id), "boot")  # as the older version wrote it
    assert monitor.get(lost.task_id).boot == ""  # type: ignore[union-attr]
    new = WorkerRegistry(redis_client, keys, NAME, ttl_s=60, boot="cccccccc")
    new.heartbeat()
    reaper = Reaper(redis_client, keys, new, monitor)
    assert reaper.reap_once() == []
    wait_until(lambda: NAME in new.expired(), timeout=10 * TTL_S, what="the old heartbeat lapse")
    assert reaper.reap_once() == [lost.task_id]
    assert _state(monitor, kept.task_id) is TaskState.QUEUED
    assert sorted(new.alive()) == sorted(["host:old-alive", f"{NAME}/cccccccc"])


def test_only_the_same_boots_done_overrules_an_abandoned(
    redis_client: redis.Redis, keys: Keys, monitor: RedisTaskMonitor
) -> None:
    """A write-back of `done` overrules the reaper's presumption only from the process that
    ran the task: another boot of the same name never ran it."""
    task = monitor.start(_task("aaaaaaaa")).task
    running = monitor.transition(task.task_id, expected_version=1, state=TaskState.RUNNING, now=2.0)
    assert running is not None
    abandoned = monitor.transition(
        task.task_id,
        expected_version=2,
        state=TaskState.FAILED,
        now=3.0,
        error=TaskError("abandoned", "worker host:7 stopped"),
    )
    assert abandoned is not None
    done = running.transition(TaskState.DONE, now=2.5)
    impostor = dataclasses.replace(done, boot="bbbbbbbb")
    assert not monitor.restore(impostor).written
    assert _state(monitor, task.task_id) is TaskState.FAILED
    assert monitor.restore(done).written
    assert _state(monitor, task.task_id) is TaskState.DONE
