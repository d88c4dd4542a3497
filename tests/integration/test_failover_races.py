"""The failover layer's edges, each forced by hand against a real redis-own_redis: a write that
waited for the lock while the worker re-promoted, a write-back that fails half way after Redis
lost its data, a renewal right after Redis forgot its holders, a start whose reply was lost
under `reject`, a Redis grant that lands after the worker tripped, a start-up blip in auto
mode. Each failed before the fix that closed it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from taskmon.config import load_settings
from taskmon.domain import Task, TaskRequest, TaskState
from taskmon.harness.redis_server import RedisServer
from taskmon.ports import BackendUnavailable, Holder, Lease, PermitTimeout
from taskmon.redis import epoch
from taskmon.runtime import build_runtime
from tests.support.failover_rig import KEYS, MakeRuntime, stored
from tests.support.timing import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("clean_taskmon_env")]


def new_task(key: str | None = None) -> Task:
    request = TaskRequest.parse({"text": "hello"})
    return Task.create(request, worker="host:1", now=time.time(), idempotency_key=key)


def test_a_move_that_waited_while_the_worker_re_promoted_goes_to_redis(
    own_redis: RedisServer, own_observer: redis.Redis, make_runtime: MakeRuntime
) -> None:
    rt = make_runtime()
    monitor, failover = rt.monitor, rt.failover
    assert failover is not None
    failover.close()  # the test drives the switch
    task = new_task()
    monitor.start(task)
    own_redis.stop_for_now()
    monitor.counts()  # trips it
    assert failover.degraded
    moved: list[Task | None] = []
    with failover.lock:
        mover = threading.Thread(target=lambda: moved.append(monitor.transition(
            task.task_id, expected_version=1, state=TaskState.RUNNING, now=time.time(),
            known=task,
        )))  # fmt: skip
        mover.start()
        time.sleep(0.3)  # it read "degraded" and waits for the lock
        own_redis.start()
        failover._degraded = False  # what the re-promotion does under this lock
    mover.join()
    assert moved[0] is not None
    assert stored(own_observer, task.task_id).state is TaskState.RUNNING, "recorded in Redis"
    assert task.task_id not in monitor.unsynced_ids()  # type: ignore[attr-defined]


def test_a_write_back_that_fails_after_redis_lost_its_data_is_done_whole_next_time(
    own_redis: RedisServer, own_observer: redis.Redis, make_runtime: MakeRuntime
) -> None:
    rt = make_runtime()
    finished = rt.service.submit({"text": "finished before the outage"}).task
    wait_for(lambda: (t := stored(own_observer, finished.task_id)) and t.state.terminal)
    own_redis.stop()  # its data is lost
    rt.monitor.counts()
    assert rt.degraded
    primary: Any = rt.monitor._primary  # type: ignore[attr-defined]
    real, calls = primary.restore, []

    def blip_once(task: Task) -> Any:
        calls.append(task.task_id)
        if len(calls) == 1:
            raise BackendUnavailable("a blip during the write-back")
        return real(task)

    primary.restore = blip_once
    own_redis.start()
    wait_for(lambda: not rt.degraded, timeout=10, message="re-promoted")
    assert stored(own_observer, finished.task_id) is not None, f"never rewritten: {calls}"


def test_a_renewal_right_after_redis_forgot_its_holders_keeps_the_permit(
    make_runtime: MakeRuntime, own_observer: redis.Redis
) -> None:
    rt = make_runtime()
    lease = rt.semaphore.acquire(Holder("host:1", "t1"), timeout=1, token="t1")
    own_observer.flushall()  # an empty restart that no call of ours saw
    assert rt.semaphore.renew(lease), "told its lease ended although it never did"
    assert own_observer.zrange(KEYS.sem_holders, 0, -1) == ["t1"], "registered again"


def test_a_renewal_whose_check_cannot_reach_redis_does_not_cancel(
    make_runtime: MakeRuntime, own_observer: redis.Redis
) -> None:
    rt = make_runtime()
    assert rt.failover is not None
    lease = rt.semaphore.acquire(Holder("host:1", "t1"), timeout=1, token="t1")
    own_observer.flushall()

    def away() -> bool:
        raise BackendUnavailable("a blip on the epoch read")

    rt.failover._store_lost = away
    assert rt.semaphore.renew(lease), "Redis away during the check, yet the holder is cancelled"
    assert rt.degraded


def test_a_start_whose_reply_was_lost_under_reject_is_run_not_refused(
    make_runtime: MakeRuntime, own_observer: redis.Redis
) -> None:
    """It may have landed: refusing it (429) would leave a task in Redis nobody runs."""
    rt = make_runtime(fallback_policy="reject")
    primary: Any = rt.monitor._primary  # type: ignore[attr-defined]
    real = primary.start

    def landed_reply_lost(task: Task) -> Any:
        real(task)
        raise BackendUnavailable("the reply was lost")

    primary.start = landed_reply_lost
    accepted = rt.service.submit({"text": "hello there"}, "key-123")
    primary.start = real
    assert not accepted.replayed
    wait_for(lambda: not rt.degraded, timeout=10, message="re-promoted")
    wait_for(lambda: (t := stored(own_observer, accepted.task.task_id)) and t.state.terminal)
    assert stored(own_observer, accepted.task.task_id).state is TaskState.DONE


def test_a_redis_grant_that_lands_after_the_trip_is_given_back_under_reject(
    make_runtime: MakeRuntime, own_observer: redis.Redis
) -> None:
    rt = make_runtime(fallback_policy="reject", concurrency_limit=1)
    semaphore, failover = rt.semaphore, rt.failover
    assert failover is not None
    first = semaphore.acquire(Holder("host:1", "a"), timeout=1, token="a")
    got: list[Lease | BaseException] = []

    def second() -> None:
        try:
            got.append(semaphore.acquire(Holder("host:1", "b"), timeout=3, token="b"))
        except PermitTimeout as exc:
            got.append(exc)

    waiter = threading.Thread(target=second)
    waiter.start()
    wait_for(lambda: own_observer.zcard(KEYS.sem_queue) == 1, message="b queued in Redis")
    failover.close()  # stays degraded
    failover.trip(BackendUnavailable("only the subscriber's connection broke"))
    semaphore._primary.release(semaphore._find(first).redis)  # type: ignore[attr-defined]
    waiter.join()
    assert isinstance(got[0], PermitTimeout), f"granted while degraded under reject: {got}"
    assert own_observer.zcard(KEYS.sem_holders) == 0, "the late grant was given back"


def test_auto_mode_falls_back_to_memory_on_a_blip_while_it_builds(
    own_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def blip(self: epoch.EpochWatch) -> bool:
        raise BackendUnavailable("a blip")

    monkeypatch.setattr(epoch.EpochWatch, "changed", blip)
    settings = load_settings(
        {"backend": "auto", "redis_url": own_redis.url, "engine": "tone", "result_dir": tmp_path}
    )
    rt = build_runtime(settings, worker_id="host:9")
    try:
        assert (rt.monitor.backend, rt.degraded) == ("memory", True)
    finally:
        rt.close(wait=True)


def test_renew_all_renews_redis_grants_in_one_call_and_the_rest_one_by_one(
    make_runtime: MakeRuntime, own_observer: redis.Redis
) -> None:
    rt = make_runtime()
    leases = [rt.semaphore.acquire(Holder("host:1", t), timeout=1, token=t) for t in ("a", "b")]
    own_observer.zadd(KEYS.sem_holders, {"a": 1, "b": 1})  # both leases ended long ago
    primary: Any = rt.semaphore._primary  # type: ignore[attr-defined]
    real, batches = primary.renew_all, []

    def counted(grants: Any) -> Any:
        batches.append(len(grants))
        return real(grants)

    primary.renew_all = counted
    assert rt.semaphore.renew_all(leases) == [False, False], "ended leases stay ended"
    assert batches == [2], "one batched call for both (each unconfirmed one then by itself)"
    fresh = rt.semaphore.acquire(Holder("host:1", "c"), timeout=1, token="c")
    assert rt.semaphore.renew_all([fresh]) == [True]
    assert batches == [2, 1]
    assert fresh.release()
