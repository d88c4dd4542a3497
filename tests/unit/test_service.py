"""TaskService wired to the real in-memory adapters, a real ResultStore and (fake) engines."""

from __future__ import annotations

import threading
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskmon.domain import ErrorCode, InvalidInput, Task, TaskState
from taskmon.engines import Engine, EngineError, ToneEngine
from taskmon.memory import InMemorySemaphore, InMemoryTaskMonitor
from taskmon.ports import Holder
from taskmon.results import ResultStore
from taskmon.service import IdempotencyConflict, QueueFull, ServiceClosed, TaskService
from tests.support.engines import FakeEngine, GatedEngine
from tests.support.timing import WAIT_S, run_threads, wait_for

WORKER = "test-host:1"

MakeService = Callable[..., TaskService]


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[MakeService]:
    services: list[TaskService] = []
    gates: list[threading.Event] = []

    def make(
        engine: Engine | None = None,
        *,
        limit: int = 2,
        threads: int | None = None,
        max_pending: int = 32,
        permit_timeout_s: float = WAIT_S * 3,
    ) -> TaskService:
        results = ResultStore(tmp_path / f"results-{len(services)}")
        results.prepare()
        engine = engine or ToneEngine(ms_per_char=0)
        if isinstance(engine, GatedEngine):
            gates.append(engine.gate)
        service = TaskService(
            monitor=InMemoryTaskMonitor(),
            semaphore=InMemorySemaphore(limit, lease_ttl_s=30),
            engine=engine,
            results=results,
            worker_id=WORKER,
            max_pending=max_pending,
            permit_timeout_s=permit_timeout_s,
            threads=threads or limit,
        )
        services.append(service)
        return service

    yield make
    for gate in gates:  # never leave a thread blocked in a fake engine
        gate.set()
    for service in services:
        service.close(timeout_s=WAIT_S)
        service.monitor.close()


def wait_terminal(service: TaskService, task_id: str, timeout: float = WAIT_S) -> Task:
    """The task once done or failed: woken by its events, re-reading the snapshot each time."""
    deadline = time.monotonic() + timeout
    with service.monitor.subscribe(task_id) as events:
        while True:
            task = service.monitor.get(task_id)
            assert task is not None, f"task {task_id} vanished"
            if task.state.terminal:
                return task
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"task {task_id} still {task.state} after {timeout} s"
            events.get(timeout=min(remaining, 0.5))


def wait_idle(service: TaskService) -> None:
    """Every accepted task has left the worker, and every permit is back."""
    wait_for(lambda: service.pending() == 0, message="no pending task")
    wait_for(lambda: service.semaphore.in_use() == 0, message="every permit released")


def read_wav(path: Path) -> tuple[int, int, int]:
    with wave.open(str(path), "rb") as wav:
        return wav.getnchannels(), wav.getframerate(), wav.getnframes()


# --- the happy path -----------------------------------------------------------------------------


def test_submit_runs_to_done_with_a_wav_on_disk(make_service: MakeService) -> None:
    service = make_service()
    submission = service.submit({"text": "hello world"})
    assert not submission.replayed
    accepted = submission.task
    assert (accepted.state, accepted.version, accepted.worker) == (TaskState.QUEUED, 1, WORKER)
    assert accepted.voice == "default", "the engine's default voice is filled in"

    done = wait_terminal(service, accepted.task_id)
    assert done.state is TaskState.DONE
    assert done.version == 3
    assert done.error is None
    assert done.started_at is not None
    assert done.finished_at is not None
    assert accepted.created_at <= done.started_at <= done.finished_at
    path = service.results.path_for(accepted.task_id)
    assert path.is_file()
    assert read_wav(path) == (1, 16_000, len("hello world") * 960)
    wait_idle(service)
    counts = service.monitor.counts()
    assert (counts.done, counts.total) == (1, 1)


def test_voice_is_canonicalised_and_checked_before_anything_is_stored(
    make_service: MakeService,
) -> None:
    service = make_service()
    assert service.submit({"text": "hi", "voice": "LOW"}).task.voice == "low"
    with pytest.raises(InvalidInput) as caught:
        service.submit({"text": "hi", "voice": "klingon"})
    assert caught.value.field_name == "voice"
    assert service.monitor.counts().total == 1


@pytest.mark.parametrize(
    ("payload", "field"),
    [({}, "text"), ({"text": " "}, "text"), ([], "body"), ({"text": "a", "x": 1}, "x")],
)
def test_invalid_payload_is_rejected_without_a_trace(
    make_service: MakeService, payload: Any, field: str
) -> None:
    service = make_service()
    with pytest.raises(InvalidInput) as caught:
        service.submit(payload)
    assert caught.value.field_name == field
    assert service.pending() == 0
    assert service.monitor.counts().total == 0


# --- failures -----------------------------------------------------------------------------------


def test_engine_error_fails_the_task_and_the_worker_keeps_working(
    make_service: MakeService,
) -> None:
    engine = FakeEngine({"bad": EngineError("the engine broke")})
    service = make_service(engine, limit=1)
    bad = service.submit({"text": "bad"}).task
    failed = wait_terminal(service, bad.task_id)
    assert failed.state is TaskState.FAILED
    assert failed.error is not None
    assert failed.error.code == "engine_error"
    assert failed.error.message == "the engine broke"
    assert failed.started_at is not None, "it failed while running"
    assert not service.results.path_for(bad.task_id).exists()

    good = [service.submit({"text": f"good {n}"}).task for n in range(3)]
    assert all(wait_terminal(service, t.task_id).state is TaskState.DONE for t in good)
    wait_idle(service)
    counts = service.monitor.counts()
    assert (counts.done, counts.failed) == (3, 1)


def test_os_error_is_a_storage_error(make_service: MakeService) -> None:
    engine = FakeEngine({"disk": PermissionError(13, "Permission denied", "/secret/path")})
    service = make_service(engine)
    task = service.submit({"text": "disk"}).task
    failed = wait_terminal(service, task.task_id)
    assert failed.error is not None
    assert failed.error.code == "storage_error"
    assert "/secret/path" not in failed.error.message, "no server paths reach the client"


def test_an_unexpected_engine_exception_still_ends_the_task(make_service: MakeService) -> None:
    # An engine with a bug raises something other than EngineError. The service promises that
    # an accepted task ends done or failed, so the task must not stay "running" forever.
    engine = FakeEngine({"buggy": ZeroDivisionError("division by zero")})
    service = make_service(engine)
    task = service.submit({"text": "buggy"}).task
    wait_idle(service)  # the run is over: whatever state the task has now, it keeps
    final = service.monitor.get(task.task_id)
    assert final is not None
    assert final.state is TaskState.FAILED, f"task left {final.state} after its run ended"
    assert final.error is not None
    assert final.error.code in {code.value for code in ErrorCode}
    # ...and the worker still works.
    ok = service.submit({"text": "fine"}).task
    assert wait_terminal(service, ok.task_id).state is TaskState.DONE


def test_permit_timeout_fails_the_task(make_service: MakeService) -> None:
    service = make_service(limit=1, permit_timeout_s=0.05)
    held = service.semaphore.acquire(Holder("someone-else", "x"), timeout=0)
    try:
        task = service.submit({"text": "patience"}).task
        failed = wait_terminal(service, task.task_id)
    finally:
        held.release()
    assert failed.state is TaskState.FAILED
    assert failed.error is not None
    assert failed.error.code == "permit_timeout"
    assert failed.started_at is None, "it never ran"
    assert failed.version == 2
    wait_for(lambda: service.pending() == 0, message="the task to leave the worker")
    again = service.submit({"text": "now there is room"}).task
    assert wait_terminal(service, again.task_id).state is TaskState.DONE


# --- back-pressure ------------------------------------------------------------------------------


def test_queue_full_when_max_pending_is_reached(make_service: MakeService) -> None:
    engine = GatedEngine()
    service = make_service(engine, limit=1, threads=1, max_pending=2)
    try:
        first = service.submit({"text": "first"}, "key-1").task
        engine.wait_entered(1)
        second = service.submit({"text": "second"}).task
        assert service.pending() == 2
        with pytest.raises(QueueFull) as caught:
            service.submit({"text": "third"})
        assert 1 <= caught.value.retry_after_s <= 60
        assert isinstance(caught.value.retry_after_s, int)
        assert "2" in str(caught.value)
        assert service.monitor.counts().total == 2, "a refused task is not stored"
        # A replay is not a new task: it is answered even when the queue is full.
        replay = service.submit({"text": "first"}, "key-1")
        assert replay.replayed
        assert replay.task.task_id == first.task_id
    finally:
        engine.gate.set()
    for task in (first, second):
        assert wait_terminal(service, task.task_id).state is TaskState.DONE
    wait_idle(service)
    later = service.submit({"text": "third"}).task
    assert wait_terminal(service, later.task_id).state is TaskState.DONE


# --- idempotency --------------------------------------------------------------------------------


def test_idempotent_submit_replays_and_conflicts(make_service: MakeService) -> None:
    service = make_service()
    original = service.submit({"text": "once"}, "order-42")
    assert not original.replayed
    assert original.task.idempotency_key == "order-42"
    wait_terminal(service, original.task.task_id)

    replay = service.submit({"text": "once"}, "order-42")
    assert replay.replayed
    assert replay.task.task_id == original.task.task_id

    with pytest.raises(IdempotencyConflict) as caught:
        service.submit({"text": "twice"}, "order-42")
    assert caught.value.task.task_id == original.task.task_id
    assert "order-42" in str(caught.value)

    other = service.submit({"text": "once"}, "order-43")
    assert not other.replayed
    assert other.task.task_id != original.task.task_id
    wait_terminal(service, other.task.task_id)
    assert service.monitor.counts().total == 2


@pytest.mark.parametrize("key", ["", "has space", "clé", "x" * 256])
def test_malformed_idempotency_key_is_rejected(make_service: MakeService, key: str) -> None:
    service = make_service()
    with pytest.raises(InvalidInput) as caught:
        service.submit({"text": "a"}, key)
    assert caught.value.field_name == "Idempotency-Key"
    assert service.monitor.counts().total == 0


def test_concurrent_submits_with_one_key_make_one_task(make_service: MakeService) -> None:
    service = make_service()
    barrier = threading.Barrier(12)
    ids: list[str] = []
    replays: list[bool] = []

    def submit() -> None:
        barrier.wait(timeout=WAIT_S)
        submission = service.submit({"text": "same"}, "race")
        ids.append(submission.task.task_id)
        replays.append(submission.replayed)

    run_threads([submit] * 12)
    assert len(set(ids)) == 1
    assert replays.count(False) == 1
    wait_terminal(service, ids[0])
    wait_idle(service)
    assert service.monitor.counts().total == 1


# --- shutdown -----------------------------------------------------------------------------------


def close_in_background(service: TaskService) -> threading.Thread:
    closer = threading.Thread(target=service.close, kwargs={"timeout_s": WAIT_S}, daemon=True)
    closer.start()
    return closer


def test_close_abandons_tasks_that_never_started(make_service: MakeService) -> None:
    engine = GatedEngine()
    service = make_service(engine, limit=1, threads=1)
    running = service.submit({"text": "running"}).task
    engine.wait_entered(1)
    waiting = [service.submit({"text": f"waiting {n}"}).task for n in range(2)]
    closer = close_in_background(service)
    try:
        abandoned = [wait_terminal(service, t.task_id) for t in waiting]
    finally:
        engine.gate.set()
    closer.join(WAIT_S)
    assert not closer.is_alive(), "close() returned"
    for task in abandoned:
        assert task.state is TaskState.FAILED
        assert task.error is not None
        assert task.error.code == "abandoned"
    assert wait_terminal(service, running.task_id).state is TaskState.DONE
    assert engine.entered == 1, "an abandoned task never reaches the engine"
    assert service.pending() == 0
    with pytest.raises(ServiceClosed):
        service.submit({"text": "too late"})
    service.close()  # a second close returns at once


def test_close_abandons_tasks_waiting_for_a_permit(make_service: MakeService) -> None:
    service = make_service(limit=1, threads=2)
    held = service.semaphore.acquire(Holder("elsewhere", "x"), timeout=0)
    try:
        tasks = [service.submit({"text": f"t{n}"}).task for n in range(2)]
        closer = close_in_background(service)
        closer.join(WAIT_S)
        assert not closer.is_alive(), "close() returned"
    finally:
        held.release()
    for task in tasks:
        final = service.monitor.get(task.task_id)
        assert final is not None
        assert final.state is TaskState.FAILED
        assert final.error is not None
        assert final.error.code == "abandoned"
    assert service.pending() == 0


# --- the cap ------------------------------------------------------------------------------------


def test_never_more_than_limit_syntheses_at_once(make_service: MakeService) -> None:
    limit = 2
    engine = GatedEngine()
    # More threads than permits: the semaphore, not the thread pool, must hold the line.
    service = make_service(engine, limit=limit, threads=6, max_pending=32)
    try:
        tasks = [service.submit({"text": f"task {n}"}).task for n in range(12)]
        engine.wait_entered(limit)
        assert engine.active == limit
    finally:
        engine.gate.set()
    finals = [wait_terminal(service, t.task_id) for t in tasks]
    assert all(t.state is TaskState.DONE for t in finals)
    assert engine.entered == 12
    assert engine.max_active == limit
    wait_idle(service)
    assert service.monitor.counts().done == 12
