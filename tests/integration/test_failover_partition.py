"""A worker cut off from Redis while another keeps it (a partition, not an outage): its
heartbeat lapses, and the other worker's reaper takes it for dead. Two runtimes on one real
redis-server, the first behind the fault proxy, which is disabled and enabled again.

Promises checked: a re-promoted worker is alive in the registry before it writes anything back
(else the reaper fails a written-back task `abandoned` the moment it appears: found by the
chaos scenario `instance-partitioned`); and a task the reaper failed while its worker ran it
to `done` ends done, past the reaper's version.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import pytest
import redis

from taskmon.backends import _probe
from taskmon.domain import Task, TaskState
from taskmon.harness.redis_server import RedisServer
from taskmon.redis.workers import WorkerRegistry
from taskmon.runtime import Runtime
from tests.support.failover_rig import KEYS, MakeRuntime, ended, stored
from tests.support.timing import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("clean_taskmon_env")]

TTL_MS = 1500


def deadline_ms(observer: redis.Redis, worker: str) -> tuple[float, float]:
    """(the worker's heartbeat deadline, Redis's clock now), both in ms."""
    seconds, micros = observer.time()
    score = observer.zscore(KEYS.workers, worker)
    return float(score or 0), seconds * 1000 + micros / 1000


def reaped_while_cut_off(
    observer: redis.Redis, cut_off: tuple[Any, int], make_runtime: MakeRuntime, text: str
) -> tuple[Any, Runtime, Task, Task]:
    """Worker A behind the proxy runs a task through Redis, is cut off, and worker B's
    reaper fails the task `abandoned`: (the proxy, A, the task, the reaped task in Redis)."""
    proxy, port = cut_off
    cut = make_runtime("host:A", redis_url=f"redis://127.0.0.1:{port}/0",
                       lease_ttl_ms=TTL_MS, tone_ms_per_char=12)  # fmt: skip
    make_runtime("host:B", lease_ttl_ms=TTL_MS)
    task = cut.service.submit({"text": text}).task

    def in_redis(state: TaskState) -> bool:
        found = stored(observer, task.task_id)
        return found is not None and found.state is state

    wait_for(lambda: in_redis(TaskState.RUNNING), message="running through Redis")
    proxy.disable()
    wait_for(lambda: in_redis(TaskState.FAILED), timeout=10,
             message="the reaper failed it while its worker was cut off")  # fmt: skip
    return proxy, cut, task, stored(observer, task.task_id)


def test_a_worker_cut_off_alone_is_alive_again_before_it_writes_back(
    own_observer: redis.Redis, cut_off: tuple[Any, int], make_runtime: MakeRuntime
) -> None:
    proxy, port = cut_off
    cut = make_runtime("host:A", redis_url=f"redis://127.0.0.1:{port}/0",
                       lease_ttl_ms=TTL_MS, tone_ms_per_char=12)  # fmt: skip
    make_runtime("host:B", lease_ttl_ms=TTL_MS)  # keeps Redis, and reaps
    tasks = []
    for round_no in range(3):
        proxy.disable()
        # Long enough to be running still when it is written back (about 2.4 s).
        tasks.append(cut.service.submit({"text": f"cut off, round {round_no} " + "x" * 180}).task)
        wait_for(lambda: cut.degraded, timeout=5, message="the cut-off worker degraded")
        time.sleep(TTL_MS / 1000 + 0.3)
        deadline, now = deadline_ms(own_observer, cut.identity)
        assert deadline > 0, "precondition: it is registered under its identity"
        assert deadline < now, "precondition: its heartbeat lapsed while it was cut off"
        proxy.enable()
        wait_for(lambda: not cut.degraded, timeout=5, message="re-promoted")
        deadline, now = deadline_ms(own_observer, cut.identity)
        assert deadline > now, f"round {round_no}: back on Redis with a lapsed heartbeat"
    for task in tasks:
        wait_for(partial(ended, cut, task.task_id), timeout=20, message="every task ends")
    ends = {t.task_id: stored(own_observer, t.task_id) for t in tasks}
    assert {task.state for task in ends.values()} == {TaskState.DONE}, ends


def test_the_probe_renews_the_heartbeat_it_finds_lapsed(
    own_redis: RedisServer, own_observer: redis.Redis
) -> None:
    """The re-promotion's probe is the write that makes the worker alive again, before any
    write-back (deterministic, where the test above races the heartbeat thread)."""
    client = redis.Redis.from_url(own_redis.url, socket_timeout=5)
    try:
        registry = WorkerRegistry(client, KEYS, "host:probe", ttl_s=1.5, retention_s=60)
        own_observer.zadd(KEYS.workers, {"host:probe": 0})  # lapsed long ago
        _probe(client, KEYS, registry)
        deadline, now = deadline_ms(own_observer, "host:probe")
        assert deadline > now
    finally:
        client.close()


def test_a_done_reached_after_the_partition_overrules_the_reapers_abandoned(
    own_observer: redis.Redis, cut_off: tuple[Any, int], make_runtime: MakeRuntime
) -> None:
    """The synthesis outlasts the partition: it was running through Redis, the reaper failed
    it while its worker was cut off, the worker came back, and only then did it end. Its
    done goes through Redis against the failed task, and overrules it."""
    proxy, cut, task, reaped = reaped_while_cut_off(
        own_observer,
        cut_off,
        make_runtime,
        "outlasts the partition " + "x" * 600,  # 7.5 s
    )
    proxy.enable()
    wait_for(lambda: not cut.degraded, timeout=5, message="re-promoted")
    wait_for(lambda: stored(own_observer, task.task_id).state is TaskState.DONE, timeout=15,
             message="the done that came after the partition")  # fmt: skip
    final = stored(own_observer, task.task_id)
    assert final.version == reaped.version + 1
    mirror = cut.monitor.get(task.task_id)
    assert mirror is not None
    assert (mirror.state, mirror.version) == (TaskState.DONE, final.version)


def test_a_reapers_abandoned_gives_way_to_the_done_of_a_worker_that_was_only_cut_off(
    own_observer: redis.Redis, cut_off: tuple[Any, int], make_runtime: MakeRuntime
) -> None:
    """The task was running through Redis when its worker was cut off; the worker ran it to
    done on its own meanwhile, while the other worker's reaper failed it `abandoned`."""
    proxy, cut, task, reaped = reaped_while_cut_off(
        own_observer, cut_off, make_runtime, "running when cut off " + "x" * 60
    )
    assert reaped.error is not None
    assert reaped.error.code == "abandoned"
    wait_for(lambda: ended(cut, task.task_id), timeout=10, message="done on its own worker")
    proxy.enable()
    wait_for(lambda: not cut.degraded, timeout=5, message="re-promoted")
    final = stored(own_observer, task.task_id)
    assert (final.state, final.error) == (TaskState.DONE, None)
    assert final.version == reaped.version + 1, "past the reaper's version, never back"
    counts = own_observer.hgetall(KEYS.counters)
    assert (counts.get("done"), counts.get("failed", "0")) == ("1", "0")
