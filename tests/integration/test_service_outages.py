"""TaskService on the real Redis adapters through Redis outages: every task still ends (I5)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from taskmon.config import Settings
from taskmon.domain import TaskState
from taskmon.engines import ToneEngine
from taskmon.harness.processes import wait_until
from taskmon.harness.redis_server import RedisServer
from taskmon.ports import BackendUnavailable, Holder
from taskmon.redis.connection import make_client
from taskmon.redis.hub import RedisEventHub
from taskmon.redis.keys import Keys
from taskmon.redis.monitor import RedisTaskMonitor, load_task
from taskmon.redis.semaphore import RedisSemaphore
from taskmon.redis.subscriber import RedisSubscriber
from taskmon.results import ResultStore
from taskmon.service import TaskService

pytestmark = pytest.mark.redis


@dataclass
class Stack:
    server: RedisServer
    monitor: RedisTaskMonitor
    semaphore: RedisSemaphore
    service: TaskService


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    ms_per_char = getattr(request, "param", 0)
    with RedisServer(workdir=tmp_path / "redis") as server:
        settings = Settings(redis_url=server.url, engine="tone")
        client = make_client(settings, client_name="svc")
        keys = Keys("outage")
        subscriber = RedisSubscriber(make_client(settings, client_name="svc-sub"))
        hub = RedisEventHub(client, keys, subscriber, snapshot=partial(load_task, client, keys))
        monitor = RedisTaskMonitor(client, keys, hub=hub, ttl_s=600)
        semaphore = RedisSemaphore(
            client, keys, default_limit=1, lease_ttl_s=10, subscriber=subscriber
        )
        results = ResultStore(tmp_path / "results")
        results.prepare()
        service = TaskService(
            monitor=monitor,
            semaphore=semaphore,
            engine=ToneEngine(ms_per_char=ms_per_char),
            results=results,
            worker_id="host:1",
            max_pending=8,
            permit_timeout_s=60,
            threads=2,
            record_retry_s=0.5,
        )
        try:
            yield Stack(server, monitor, semaphore, service)
        finally:
            service.close(timeout_s=5)
            monitor.close()
            subscriber.close()
            client.close()


def _state(stack: Stack, task_id: str) -> TaskState | None:
    try:
        task = stack.monitor.get(task_id)
    except BackendUnavailable:
        return None
    return task.state if task else None


def test_a_task_waiting_for_a_permit_survives_a_redis_pause(stack: Stack) -> None:
    blocker = stack.semaphore.acquire(Holder("test", "blocker"), timeout=5, token="blocker")
    task = stack.service.submit({"text": "wait through the outage"}).task
    time.sleep(0.3)  # the task is now waiting in acquire, on its worker thread
    stack.server.pause()
    try:
        time.sleep(2.5)  # longer than the client's whole retry budget
    finally:
        stack.server.resume()
    assert _state(stack, task.task_id) is TaskState.QUEUED
    blocker.release()
    wait_until(
        lambda: _state(stack, task.task_id) is TaskState.DONE,
        timeout=30,
        what="the task to finish after the outage",
    )


def test_a_start_sent_into_a_hung_redis_is_settled_once_it_answers(stack: Stack) -> None:
    """The submit gives up (the client gets a 503) while its start script still sits in a socket
    of the hung server, to run when the server wakes. Reading the task cannot tell whether it
    will land (the read may overtake it), so the worker settles it: the task runs to done, or
    its key is barred so the late start writes nothing. Never a queued task nobody runs.
    """
    _warm_up(stack)
    stack.server.pause()
    try:
        with pytest.raises(BackendUnavailable):
            stack.service.submit({"text": "sent into the hang"})
        (task_id,) = stack.service.pending_ids()
    finally:
        stack.server.resume()
    wait_until(lambda: not stack.service.pending_ids(), timeout=30, what="the task to settle")
    state = _state(stack, task_id)
    if state is None:
        assert _barred(stack, task_id), "dropped without a bar: a late start would stay queued"
    else:
        assert state is TaskState.DONE
    counts = stack.monitor.counts()
    assert (counts.queued, counts.running) == (0, 0)


@pytest.mark.parametrize("threads", ["idle", "busy"])
def test_a_worker_closing_while_a_start_is_unsettled_settles_it_before_it_exits(
    stack: Stack, threads: str
) -> None:
    """The store is hung from the submit through close(): the settle can neither run (busy:
    close() cancels it in the executor's queue) nor finish (idle: it is retrying when the
    worker closes). The worker must not forget the task: once the store answers, finish()
    settles it, so the late start ends failed (abandoned) or barred, never queued forever.
    """
    _warm_up(stack)
    blocker = stack.semaphore.acquire(Holder("test", "blocker"), timeout=5, token="blocker")
    if threads == "idle":
        blocker.release()
    # busy: both executor threads wait for the one permit, so the settle queues behind them
    waiting = {
        stack.service.submit({"text": t}).task.task_id for t in ("1", "2") if threads == "busy"
    }
    stack.server.pause()
    try:
        with pytest.raises(BackendUnavailable):
            stack.service.submit({"text": "sent into the hang"})
        (task_id,) = stack.service.pending_ids() - waiting
        stack.service.close(timeout_s=1.0)
        assert task_id in stack.service.pending_ids(), "not forgotten while undecided"
    finally:
        stack.server.resume()
    _finish_within(stack, 30)
    stored = stack.monitor.get(task_id)
    if stored is None:
        assert _barred(stack, task_id), "dropped without a bar: a late start would stay queued"
    else:
        assert stored.state is TaskState.FAILED
        assert stored.error is not None
        assert stored.error.code == "abandoned"
    assert stack.monitor.counts().queued == 0
    blocker.release()


def test_close_returns_while_redis_hangs_and_finish_decides_the_rest(stack: Stack) -> None:
    """gunicorn kills a worker whose exit outlasts the graceful timeout, before its closers
    run. So close() must not spend a store call per task against a hung store: one probe
    per round, and the rest is left to finish(), which decides every task once it answers.
    """
    blocker = stack.semaphore.acquire(Holder("test", "blocker"), timeout=5, token="blocker")
    queued = [stack.service.submit({"text": f"waits {n}"}).task for n in range(8)]
    stack.server.pause()
    try:
        began = time.monotonic()
        stack.service.close(timeout_s=1.0)
        took = time.monotonic() - began
        assert stack.service.pending_ids() == {t.task_id for t in queued}, "none forgotten"
    finally:
        stack.server.resume()
    # Not a speed target: a round that read each of the 8 tasks from the hung store would
    # take 8 call budgets (about 14 s); a probe per round takes one (about 1.7 s).
    assert took < 8.0, f"close() took {took:.1f} s against a hung store"
    _finish_within(stack, 30)
    for task in queued:
        stored = stack.monitor.get(task.task_id)
        assert stored is not None
        assert stored.state is TaskState.FAILED
    blocker.release()


def test_a_start_that_never_reached_redis_is_dropped_and_barred(stack: Stack) -> None:
    stack.server.stop_for_now()
    try:
        with pytest.raises(BackendUnavailable):
            stack.service.submit({"text": "never sent"})
        (task_id,) = stack.service.pending_ids()
    finally:
        stack.server.start()
    wait_until(lambda: not stack.service.pending_ids(), timeout=30, what="the task to settle")
    assert _state(stack, task_id) is None
    assert _barred(stack, task_id)


def _warm_up(stack: Stack) -> None:
    """One task through, as in a running worker: a pooled connection, the scripts loaded
    (so a start sent into a hang is the script itself, not a NOSCRIPT round)."""
    warm = stack.service.submit({"text": "warm"}).task
    wait_until(lambda: _state(stack, warm.task_id) is TaskState.DONE, timeout=30, what="warm-up")


def _finish_within(stack: Stack, timeout_s: float) -> None:
    """finish() decides every held task once Redis answers; a hang fails here, not at 300 s."""
    finisher = threading.Thread(target=stack.service.finish, daemon=True)
    finisher.start()
    finisher.join(timeout_s)
    assert not finisher.is_alive(), "finish() did not decide the held tasks once Redis answered"


def _barred(stack: Stack, task_id: str) -> bool:
    client = make_client(Settings(redis_url=stack.server.url), client_name="check")
    try:
        return bool(client.hexists(Keys("outage").task(task_id), "void"))
    finally:
        client.close()


def test_a_replica_that_refuses_writes_is_backend_unavailable(stack: Stack) -> None:
    client = make_client(Settings(redis_url=stack.server.url), client_name="admin")
    try:
        # Demote the server: it becomes a replica of nothing, refusing writes (READONLY).
        client.replicaof("127.0.0.1", "1")
        with pytest.raises(BackendUnavailable):
            stack.service.submit({"text": "after a failover"})
    finally:
        client.replicaof("NO", "ONE")
        client.close()


@pytest.mark.parametrize("stack", [100], indirect=True)  # 100 ms per character
def test_a_finish_during_a_long_outage_is_recorded_when_redis_returns(stack: Stack) -> None:
    task = stack.service.submit({"text": "x" * 15}).task  # 1.5 s of synthesis
    wait_until(
        lambda: _state(stack, task.task_id) is TaskState.RUNNING,
        timeout=10,
        what="the task running",
    )
    # Down, not hung: a hung server would run the scripts queued in its sockets once resumed.
    stack.server.stop_for_now()
    time.sleep(3)  # the synthesis ends meanwhile; recording it outlasts record_retry_s
    stack.server.start()
    wait_until(
        lambda: _state(stack, task.task_id) is TaskState.DONE,
        timeout=30,
        what="done recorded once Redis answers again",
    )
