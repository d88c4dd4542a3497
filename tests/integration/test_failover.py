"""Run-time failover of one or two worker runtimes against a real redis-server that is stopped,
paused or restarted empty under them: degrade on the first failed call, serve from memory, come
back on their own, and write back what was kept."""

from __future__ import annotations

import logging
import time
from functools import partial

import pytest
import redis

from taskmon.domain import TaskState
from taskmon.harness.redis_server import RedisServer
from taskmon.ports import AdmissionClosed, Holder, PermitTimeout, TaskUnknownWhileDegraded
from tests.support.failover_rig import KEYS, MakeRuntime, ended, stored
from tests.support.timing import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("clean_taskmon_env")]


def test_a_stopped_redis_degrades_the_worker_which_serves_and_writes_back(
    own_redis: RedisServer, own_observer: redis.Redis, make_runtime: MakeRuntime
) -> None:
    rt = make_runtime()
    before = rt.service.submit({"text": "before the outage"}).task
    wait_for(lambda: ended(rt, before.task_id), message="the first task done")
    own_redis.stop_for_now()
    during = rt.service.submit({"text": "while Redis is away"}).task  # no exception: accepted
    assert (rt.degraded, rt.monitor.backend) == (True, "memory")
    wait_for(lambda: ended(rt, during.task_id), message="the degraded task done")
    assert rt.monitor.get(during.task_id).state is TaskState.DONE  # type: ignore[union-attr]
    assert rt.monitor.get(before.task_id) is not None, "its own earlier task, from the mirror"
    with pytest.raises(TaskUnknownWhileDegraded):
        rt.monitor.get("0" * 32)
    assert rt.semaphore.limit() == 2, "the whole cap: one worker, the whole share"

    own_redis.start()
    wait_for(lambda: not rt.degraded, timeout=5, message="re-promoted within 5 s")
    back = stored(own_observer, during.task_id)
    assert back is not None, "written back to Redis"
    assert back.state is TaskState.DONE
    counts = own_observer.hgetall(KEYS.counters)
    assert (counts.get("done"), counts.get("queued", "0"), counts.get("running", "0")) == (
        "2", "0", "0",
    )  # fmt: skip


def test_redis_restarted_empty_gets_back_every_task_still_held(
    own_redis: RedisServer, own_observer: redis.Redis, make_runtime: MakeRuntime
) -> None:
    """Tasks in flight when Redis lost its data (no persistence) are written back, so their
    clients' next reads find them, and each still ends done."""
    rt = make_runtime(concurrency_limit=1, tone_ms_per_char=4)
    tasks = [rt.service.submit({"text": f"held through a restart {i} " * 3}).task for i in range(6)]
    own_redis.restart()  # empty: --save "" and no AOF
    for task in tasks:
        wait_for(partial(stored, own_observer, task.task_id), message=f"{task.task_id} back")
    for task in tasks:
        wait_for(partial(ended, rt, task.task_id), timeout=20, message="every task ends")
    states = {stored(own_observer, t.task_id).state for t in tasks}
    assert states == {TaskState.DONE}
    assert int(own_observer.hget(KEYS.counters, "done") or 0) == len(tasks)


def test_the_reject_policy_admits_nothing_new_and_lets_running_work_finish(
    own_redis: RedisServer, own_observer: redis.Redis, make_runtime: MakeRuntime
) -> None:
    rt = make_runtime(fallback_policy="reject", tone_ms_per_char=300)
    running = rt.service.submit({"text": "long enough to outlive the cut"}).task
    wait_for(lambda: rt.monitor.get(running.task_id).state is TaskState.RUNNING)  # type: ignore[union-attr]
    own_redis.stop_for_now()
    # Known degraded first (the subscriber sees its connection close): a start sent before
    # that is one that may have landed, and is kept and run even under `reject`.
    wait_for(lambda: rt.degraded, timeout=5, message="degraded")
    with pytest.raises(AdmissionClosed) as refused:
        rt.service.submit({"text": "refused while Redis is away"})
    assert refused.value.retry_after_s >= 1
    assert rt.service.pending() == 1, f"no pending slot kept {rt.monitor.get(running.task_id)}"
    wait_for(lambda: ended(rt, running.task_id), timeout=20, message="the running task finishes")
    own_redis.start()
    wait_for(lambda: not rt.degraded, timeout=5, message="re-promoted")
    assert stored(own_observer, running.task_id).state is TaskState.DONE


def test_partition_shares_add_up_to_the_limit_across_workers(
    own_redis: RedisServer, make_runtime: MakeRuntime
) -> None:
    """limit 5 over 2 workers: 3 for the lower rank, 2 for the other, read from the registry."""
    first = make_runtime("host:1", concurrency_limit=5, workers=2)
    second = make_runtime("host:2", concurrency_limit=5, workers=2)
    wait_for(
        lambda: (first.semaphore.inputs.index, second.semaphore.inputs.index) == (0, 1),  # type: ignore[attr-defined]
        message="both ranked from the registry",
    )
    own_redis.stop_for_now()
    assert {first.semaphore.limit(), second.semaphore.limit()} == {3, 2}
    assert (first.degraded, second.degraded) == (True, True)


def test_a_permit_held_through_an_outage_is_counted_in_redis_again_before_new_grants(
    own_redis: RedisServer, own_observer: redis.Redis, make_runtime: MakeRuntime
) -> None:
    """Limit 1, lease 1 s, Redis down 2.5 s while a synthesis runs: its lease ended in Redis,
    and the re-promotion re-registers it before anyone else can be granted."""
    rt = make_runtime(concurrency_limit=1, lease_ttl_ms=1000, tone_ms_per_char=300)
    task = rt.service.submit({"text": "a synthesis of 12 s: " + "x" * 19}).task
    wait_for(lambda: own_observer.zcard(KEYS.sem_holders) == 1, message="permit granted")
    own_redis.stop_for_now()
    wait_for(lambda: rt.degraded, message="degraded (a renewal failed)")
    time.sleep(2.5)  # the fault itself: longer than the lease
    own_redis.start()
    wait_for(lambda: not rt.degraded, timeout=5, message="re-promoted")
    holders = own_observer.zrange(KEYS.sem_holders, 0, -1)
    assert holders == [task.task_id], "re-registered under its token"
    other = make_runtime("host:2", concurrency_limit=1, lease_ttl_ms=1000)
    with pytest.raises(PermitTimeout):  # the cap counts the re-registered permit
        other.semaphore.acquire(Holder("host:2", "rival"), timeout=1.5, token="rival")
    assert rt.monitor.get(task.task_id).state is TaskState.RUNNING  # type: ignore[union-attr]
    wait_for(lambda: ended(rt, task.task_id), timeout=30, message="it finishes")
    assert rt.monitor.get(task.task_id).state is TaskState.DONE, "never cancelled"  # type: ignore[union-attr]


def test_an_outage_costs_a_bounded_number_of_log_lines_without_tracebacks(
    own_redis: RedisServer, make_runtime: MakeRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    rt = make_runtime(lease_ttl_ms=600, tone_ms_per_char=1)
    caplog.set_level(logging.INFO, logger="taskmon")
    own_redis.stop_for_now()
    deadline = time.monotonic() + 6  # traffic all along the outage, every path exercised
    while time.monotonic() < deadline:
        task = rt.service.submit({"text": "traffic while Redis is away"}).task
        rt.monitor.get(task.task_id)
        rt.monitor.counts()
        rt.semaphore.in_use()
        time.sleep(0.05)
    own_redis.start()
    # The line that says so comes just after the flip.
    wait_for(lambda: any("is back on it" in r.getMessage() for r in caplog.records), timeout=5,
             message="re-promoted")  # fmt: skip
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) <= 12, "\n".join(f"{r.name}: {r.getMessage()[:120]}" for r in lines)
    assert not [r for r in lines if r.exc_info], "no traceback for an expected outage"
    switches = [r.getMessage() for r in lines if r.name == "taskmon.failover.switch"]
    assert len(switches) == 2
    assert "stopped answering" in switches[0]
    assert "answers again" in switches[1]
