"""What only RedisTaskMonitor has, on a real redis-server: fields, keys, indexes, TTLs, scripts,
failure modes. The TaskMonitor contract both adapters share is tests/contract/test_task_monitor.py.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from taskmon.domain import (
    RECENT_MAX,
    StartOutcome,
    StateCounts,
    TaskEvent,
)
from taskmon.harness.redis_server import RedisServer
from taskmon.ports import BackendUnavailable
from taskmon.redis.hub import RedisEventHub
from taskmon.redis.keys import Keys
from taskmon.redis.monitor import RedisTaskMonitor
from taskmon.redis.subscriber import RedisSubscriber
from tests.support.redis_wiring import MonitorWiring, wire_monitor
from tests.support.tasks import BOOM, DONE, FAILED, QUEUED, RUNNING, make_task, run_to
from tests.support.timing import wait_for

pytestmark = pytest.mark.redis


@pytest.fixture
def monitor(make_monitor_wiring: Callable[..., MonitorWiring]) -> RedisTaskMonitor:
    return make_monitor_wiring().monitor


# --- start and get ------------------------------------------------------------------------------


def test_start_then_get_roundtrips_every_field(monitor: RedisTaskMonitor) -> None:
    plain, full = make_task(), make_task("grüße 你好", key="k-1", voice="en-us")
    for task in (plain, full):
        result = monitor.start(task)
        assert result.outcome is StartOutcome.CREATED
        assert result.task == task
        stored = monitor.get(task.task_id)
        assert stored == task
        assert stored is not None
        assert stored.idempotency_key == task.idempotency_key
    failed = run_to(monitor, full, FAILED)
    assert monitor.get(full.task_id) == failed
    assert monitor.get("f" * 32) is None
    assert monitor.counts() == StateCounts(queued=1, failed=1)
    assert monitor.backend == "redis"
    assert monitor.ping()


def test_starting_one_task_twice(monitor: RedisTaskMonitor) -> None:
    keyed, plain = make_task(key="k"), make_task()
    monitor.start(keyed)
    monitor.start(plain)
    # With a key, as in memory: the second start replays the first.
    assert monitor.start(keyed) == monitor.start(make_task(key="k"))
    assert monitor.start(keyed).outcome is StartOutcome.REPLAYED
    # Without one, a reused id is a caller bug: refused, never double counted.
    with pytest.raises(ValueError, match="already in use"):
        monitor.start(plain)
    assert monitor.counts() == StateCounts(queued=2)


def test_scripts_are_safe_to_run_twice(monitor: RedisTaskMonitor) -> None:
    """What redis-py's retry does after a lost reply: the same script call, run again."""
    for key in (None, "k"):
        task = make_task(key=key)
        assert monitor._run_start(task, "op-1", "") == ["created"]
        assert monitor._run_start(task, "op-1", "") == ["created"]
    running = task.transition(RUNNING, now=1.0)
    assert monitor._apply(task, running, 1.0, "op-2")
    assert monitor._apply(task, running, 1.0, "op-2")
    done = running.transition(DONE, now=2.0)
    assert monitor._apply(running, done, 2.0, "op-3")
    assert monitor._apply(running, done, 2.0, "op-3")
    assert not monitor._apply(running, done, 2.0, "op-4"), "another call is still stale"
    assert monitor.get(task.task_id) == done
    assert monitor.counts() == StateCounts(queued=1, done=1)


def test_settling_a_start_that_landed_keeps_the_task(monitor: RedisTaskMonitor) -> None:
    task = make_task(key="landed")
    assert monitor._run_start(task, "op-1", "") == ["created"]  # landed; its reply was lost
    assert monitor.settle_start(task) is True
    assert monitor.settle_start(task) is True, "the answer is final"
    assert monitor.get(task.task_id) == task
    assert monitor.find_by_idempotency_key("landed") == task


def test_settling_first_bars_the_late_start(monitor: RedisTaskMonitor, keys: Keys) -> None:
    """The start was still queued at a hung server when its caller gave up and settled."""
    task = make_task(key="late")
    with monitor.subscribe(task.task_id) as events:
        assert monitor.settle_start(task) is False
        assert monitor._run_start(task, "op-1", "") == ["exists"], "the late start is refused"
        assert monitor.settle_start(task) is False, "the answer is final"
        assert events.get(timeout=0.2) is None, "the refused start published nothing"
    assert monitor.get(task.task_id) is None
    assert monitor.find_by_idempotency_key("late") is None, "nor did it claim the key"
    assert monitor.counts() == StateCounts()
    assert 0 < monitor._client.ttl(keys.task(task.task_id)) <= 100, "the bar expires"


def test_a_key_whose_task_vanished_is_free(
    make_monitor_wiring: Callable[..., MonitorWiring], keys: Keys
) -> None:
    worker = make_monitor_wiring()
    first = make_task("first", key="k")
    worker.monitor.start(first)
    worker.client.delete(keys.task(first.task_id))  # an eviction, or an operator's DEL
    assert worker.monitor.find_by_idempotency_key("k") is None
    second = make_task("second", key="k")
    assert worker.monitor.start(second).outcome is StartOutcome.CREATED
    assert worker.monitor.find_by_idempotency_key("k") == second


# --- transition ---------------------------------------------------------------------------------


def test_transitions_move_the_state_indexes_and_start_the_ttl_at_the_finish(
    make_monitor_wiring: Callable[..., MonitorWiring], keys: Keys
) -> None:
    """The fields and counts are the contract's; the indexes and TTLs are Redis's own."""
    worker = make_monitor_wiring()
    monitor, client = worker.monitor, worker.client
    task = make_task(key="k")
    monitor.start(task)
    assert client.zscore(keys.state_index(QUEUED), task.task_id) == task.created_at
    running = run_to(monitor, task, RUNNING)
    assert client.zscore(keys.state_index(QUEUED), task.task_id) is None
    assert client.zscore(keys.state_index(RUNNING), task.task_id) == running.started_at
    assert client.ttl(keys.task(task.task_id)) == -1, "a live task never expires"
    monitor.transition(task.task_id, expected_version=running.version, state=DONE, now=30.0)
    assert client.zcard(keys.state_index(RUNNING)) == 0
    assert 0 < client.ttl(keys.task(task.task_id)) <= 100


# --- retention ----------------------------------------------------------------------------------


def test_the_finish_restarts_the_ttl_of_the_key(
    make_monitor_wiring: Callable[..., MonitorWiring], keys: Keys
) -> None:
    # Two workers configured with different retentions make the refresh visible without a wait.
    creator, finisher = make_monitor_wiring(ttl_s=1000), make_monitor_wiring(ttl_s=5000)
    task = make_task(key="k")
    creator.monitor.start(task)
    assert 0 < creator.client.ttl(keys.idempotency("k")) <= 1000
    run_to(finisher.monitor, task, DONE)
    assert 1000 < creator.client.ttl(keys.idempotency("k")) <= 5000
    assert 1000 < creator.client.ttl(keys.task(task.task_id)) <= 5000


def test_finished_tasks_and_keys_expire_live_tasks_stay(
    make_monitor_wiring: Callable[..., MonitorWiring], keys: Keys
) -> None:
    worker = make_monitor_wiring(ttl_s=1)
    monitor = worker.monitor
    done_task, failed_task = make_task("done", key="kd"), make_task("failed")
    waiting, running_task = make_task("waiting"), make_task("running")
    for task in (done_task, failed_task, waiting, running_task):
        monitor.start(task)
    run_to(monitor, done_task, DONE)
    run_to(monitor, failed_task, FAILED)
    running = run_to(monitor, running_task, RUNNING)
    wait_for(
        lambda: (
            monitor.get(done_task.task_id) is None
            and monitor.get(failed_task.task_id) is None
            and monitor.find_by_idempotency_key("kd") is None
            and worker.client.get(keys.idempotency("kd")) is None
        ),
        timeout=5,
        message="finished tasks and their key to expire",
    )
    assert monitor.get(waiting.task_id) == waiting
    assert monitor.get(running_task.task_id) == running
    assert worker.client.ttl(keys.task(waiting.task_id)) == -1
    assert worker.client.ttl(keys.task(running_task.task_id)) == -1
    assert monitor.counts() == StateCounts(queued=1, running=1, done=1, failed=1)
    # An expired key can be used again, with any payload.
    again = make_task("another payload", key="kd")
    assert monitor.start(again).outcome is StartOutcome.CREATED
    assert monitor.find_by_idempotency_key("kd") == again


# --- failure modes ------------------------------------------------------------------------------


def test_a_client_that_does_not_decode_is_refused(redis_server: RedisServer, keys: Keys) -> None:
    client = redis.Redis.from_url(redis_server.url)
    decoding = redis.Redis.from_url(redis_server.url, decode_responses=True)
    hub = RedisEventHub(decoding, keys, RedisSubscriber(decoding), snapshot=lambda _: None)
    with pytest.raises(ValueError, match="decode_responses"):
        RedisTaskMonitor(client, keys, hub=hub, ttl_s=10)
    with pytest.raises(ValueError, match="decode_responses"):
        RedisSubscriber(client)
    client.close()
    decoding.close()


@pytest.mark.parametrize("fault", ["stopped", "hung"])
def test_an_unreachable_redis_raises_backend_unavailable_fast(
    fault: str, tmp_path: Path, keys: Keys
) -> None:
    with RedisServer(workdir=tmp_path) as server:
        worker = wire_monitor(server.url, keys)
        try:
            task = make_task(key="k")
            worker.monitor.start(task)
            server.stop() if fault == "stopped" else server.pause()
            calls: list[Callable[[], object]] = [
                lambda: worker.monitor.get(task.task_id),
                lambda: worker.monitor.transition(
                    task.task_id, expected_version=1, state=RUNNING, now=1
                ),
            ]
            if fault == "stopped":  # a hung server costs the full timeout per call
                calls += [
                    lambda: worker.monitor.start(make_task()),
                    lambda: worker.monitor.find_by_idempotency_key("k"),
                    worker.monitor.counts,
                    lambda: worker.monitor.hub.publish(TaskEvent(task)),
                ]
            for call in calls:
                began = time.monotonic()
                with pytest.raises(BackendUnavailable, match="TASKMON_REDIS_URL"):
                    call()
                assert time.monotonic() - began < 4.0
            began = time.monotonic()
            assert worker.monitor.ping() is False
            assert time.monotonic() - began < 4.0
        finally:
            worker.close()


# --- the op tokens ----------------------------------------------------------------------------


def test_unique_op_tokens_do_not_leak_into_tasks(monitor: RedisTaskMonitor, keys: Keys) -> None:
    task = make_task()
    monitor.start(task)
    op = monitor._client.hget(keys.task(task.task_id), "op")
    assert op is not None
    assert uuid.UUID(hex=str(op))
    assert monitor.get(task.task_id) == task


def test_a_known_copy_skips_the_read_but_never_the_check(monitor: RedisTaskMonitor) -> None:
    task = monitor.start(make_task()).task
    moved = monitor.transition(
        task.task_id, expected_version=1, state=RUNNING, now=20.0, known=task
    )
    assert moved is not None
    assert moved.version == 2
    # The same stale copy again: the script sees version 2 in the store and refuses.
    again = monitor.transition(
        task.task_id, expected_version=1, state=FAILED, now=21.0, error=BOOM, known=task
    )
    assert again is None
    stored = monitor.get(task.task_id)
    assert stored is not None
    assert (stored.state, stored.version) == (RUNNING, 2)


# --- the recent list ----------------------------------------------------------------------------


def test_the_recent_index_is_bounded_where_it_grows_and_read_without_the_text(
    redis_client: redis.Redis, keys: Keys, monitor: RedisTaskMonitor
) -> None:
    tasks = [make_task(f"task {n} " + "x" * 4000) for n in range(RECENT_MAX + 3)]
    for n, task in enumerate(tasks):
        monitor.start(dataclasses.replace(task, created_at=100.0 + n))
    assert redis_client.zcard(keys.recent) == RECENT_MAX, "trimmed by the script that adds"
    gone, legacy = tasks[-1], tasks[-2]
    redis_client.delete(keys.task(gone.task_id))  # expired, or an operator's DEL
    redis_client.hdel(keys.task(legacy.task_id), "excerpt")  # written by an older version
    commands = redis_client.info("commandstats")
    listed = monitor.recent(3).tasks
    assert [s.task_id for s in listed] == [legacy.task_id, tasks[-3].task_id]
    assert listed[0].excerpt == ""
    assert listed[1].excerpt.startswith(f"task {RECENT_MAX} xxx")
    after = redis_client.info("commandstats")
    assert "cmdstat_hgetall" not in after or after["cmdstat_hgetall"] == commands.get(
        "cmdstat_hgetall"
    ), "no task's full text is read"
