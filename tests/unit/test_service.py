"""TaskService wired to the real in-memory adapters, a real ResultStore and (fake) engines."""

from __future__ import annotations

import math
import threading
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from taskmon.domain import ErrorCode, InvalidInput, Task, TaskError, TaskRequest, TaskState
from taskmon.engines import Engine, EngineError, ToneEngine
from taskmon.harness.journal_check import abandoned_tasks, check_cap, read_events
from taskmon.journal import SynthesisJournal
from taskmon.memory import InMemorySemaphore, InMemoryTaskMonitor
from taskmon.ports import BackendUnavailable, Holder
from taskmon.results import ResultStore
from taskmon.service import IdempotencyConflict, QueueFull, ServiceClosed, TaskService
from tests.support.engines import FakeEngine, GatedEngine
from tests.support.outages import OutageMonitor, OutageSemaphore
from tests.support.timing import WAIT_S, FakeClock, run_threads, wait_for

WORKER = "test-host:1"

MakeService = Callable[..., TaskService]


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[MakeService]:
    services: list[TaskService] = []
    gates: list[threading.Event] = []
    journals: list[SynthesisJournal] = []

    def make(
        engine: Engine | None = None,
        *,
        limit: int = 2,
        threads: int | None = None,
        max_pending: int = 32,
        permit_timeout_s: float = WAIT_S * 3,
        monitor: InMemoryTaskMonitor | None = None,
        semaphore: InMemorySemaphore | None = None,
        lease_ttl_s: float = 30,
        record_retry_s: float = 10.0,
        journal: SynthesisJournal | None = None,
    ) -> TaskService:
        results = ResultStore(tmp_path / f"results-{len(services)}")
        results.prepare()
        engine = engine or ToneEngine(ms_per_char=0)
        if isinstance(engine, GatedEngine):
            gates.append(engine.gate)
        if journal is not None:
            journals.append(journal)
        service = TaskService(
            monitor=monitor if monitor is not None else InMemoryTaskMonitor(),
            semaphore=(
                semaphore
                if semaphore is not None
                else InMemorySemaphore(limit, lease_ttl_s=lease_ttl_s)
            ),
            engine=engine,
            results=results,
            worker_id=WORKER,
            max_pending=max_pending,
            permit_timeout_s=permit_timeout_s,
            threads=threads or limit,
            journal=journal,
            record_retry_s=record_retry_s,
        )
        services.append(service)
        return service

    yield make
    for gate in gates:  # never leave a thread blocked in a fake engine
        gate.set()
    for service in services:
        for port in (service.monitor, service.semaphore):
            if isinstance(port, OutageMonitor | OutageSemaphore):
                port.outage.end()  # nor one retrying against a store that stays away
        service.close(timeout_s=WAIT_S)
        service.monitor.close()
    for journal in journals:
        journal.close()


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


def sample(name: str, **labels: str) -> float:
    """One sample of the worker's metrics, as /metrics shows it (0 before it first moves)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def submitted(outcome: str) -> float:
    return sample("taskmon_tasks_submitted_total", outcome=outcome)


def finished(state: str, code: str = "") -> float:
    return sample("taskmon_tasks_finished_total", state=state, code=code)


def threads_named(prefix: str, besides: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t not in besides]


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


def test_the_task_holds_its_permit_with_its_id_as_the_owner_token(
    make_service: MakeService,
) -> None:
    # So an acquire retried after an outage (its reply lost) finds the permit it already has.
    engine = GatedEngine()
    service = make_service(engine)
    try:
        task = service.submit({"text": "mine"}).task
        engine.wait_entered(1)
        (held,) = service.semaphore.holders()
        assert (held.token, held.holder) == (task.task_id, Holder(WORKER, task.task_id))
    finally:
        engine.gate.set()
    assert wait_terminal(service, task.task_id).state is TaskState.DONE


def test_the_task_is_synthesized_in_the_voice_it_asked_for(
    make_service: MakeService, tmp_path: Path
) -> None:
    service = make_service()
    task = service.submit({"text": "hello", "voice": "high"}).task
    assert wait_terminal(service, task.task_id).state is TaskState.DONE
    reference = tmp_path / "reference.wav"
    ToneEngine(ms_per_char=0).synthesize("hello", "high", reference)
    assert service.results.path_for(task.task_id).read_bytes() == reference.read_bytes()


def test_every_synthesis_is_journalled_with_its_task_and_fencing_token(
    make_service: MakeService, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    service = make_service(limit=1, journal=SynthesisJournal(journal))
    tasks = [service.submit({"text": f"task {n}"}).task for n in range(3)]
    for task in tasks:
        assert wait_terminal(service, task.task_id).state is TaskState.DONE
    report = check_cap(journal)
    assert (report.syntheses, report.peak, report.unmatched_starts) == (3, 1, [])
    events, _ = read_events(journal)
    started = [synthesis for _, delta, synthesis in events if delta > 0]
    assert sorted(task for _, task, _ in started) == sorted(t.task_id for t in tasks)
    fencings = [fencing for _, _, fencing in started]
    assert all(f.isdigit() for f in fencings)
    assert len(set(fencings)) == 3, "one grant per synthesis"


def test_tasks_run_on_at_most_threads_threads_of_their_own(make_service: MakeService) -> None:
    before = set(threading.enumerate())
    engine = GatedEngine()
    service = make_service(engine, limit=4, threads=2)
    try:
        tasks = [service.submit({"text": f"task {n}"}).task for n in range(4)]
        engine.wait_entered(2)
        assert len(threads_named("taskmon-run", before)) == 2
    finally:
        engine.gate.set()
    assert all(wait_terminal(service, t.task_id).state is TaskState.DONE for t in tasks)


def test_the_metrics_count_submissions_by_outcome(make_service: MakeService) -> None:
    outcomes = ("created", "replayed", "conflict", "queue_full")
    before = {outcome: submitted(outcome) for outcome in outcomes}
    engine = GatedEngine()
    service = make_service(engine, limit=1, max_pending=1)
    try:
        task = service.submit({"text": "once"}, "k").task
        assert service.submit({"text": "once"}, "k").replayed
        with pytest.raises(IdempotencyConflict):
            service.submit({"text": "twice"}, "k")
        with pytest.raises(QueueFull):
            service.submit({"text": "one too many"})
    finally:
        engine.gate.set()
    assert wait_terminal(service, task.task_id).state is TaskState.DONE
    assert {o: submitted(o) - before[o] for o in outcomes} == dict.fromkeys(outcomes, 1.0)


def test_the_metrics_count_every_end_and_time_the_waits_and_syntheses(
    make_service: MakeService,
) -> None:
    ends = [
        ("done", ""),
        ("failed", "engine_error"),
        ("failed", "permit_timeout"),
        ("failed", "abandoned"),
    ]
    before = {end: finished(*end) for end in ends}
    timings = ("taskmon_permit_wait_seconds", "taskmon_synthesis_seconds")
    counts = {name: sample(f"{name}_count") for name in timings}
    sums = {name: sample(f"{name}_sum") for name in timings}
    gauges = {name: sample(name) for name in ("taskmon_tasks_pending", "taskmon_syntheses_running")}
    engine = GatedEngine()
    engine.failures["bad"] = EngineError("the engine broke")
    engine.gate.set()
    service = make_service(engine, limit=1, threads=1, permit_timeout_s=0.2)

    began = time.monotonic()
    fine = wait_terminal(service, service.submit({"text": "fine"}).task.task_id)
    took = time.monotonic() - began
    assert fine.state is TaskState.DONE
    for name in timings:  # one wait for a permit, one synthesis, each within what this took
        assert sample(f"{name}_count") - counts[name] == 1
        assert 0 <= sample(f"{name}_sum") - sums[name] <= took
    bad = wait_terminal(service, service.submit({"text": "bad"}).task.task_id)
    assert bad.error is not None
    assert bad.error.code == "engine_error"
    held = service.semaphore.acquire(Holder("elsewhere", "x"), timeout=0)
    late = wait_terminal(service, service.submit({"text": "late"}).task.task_id)
    assert late.error is not None
    assert late.error.code == "permit_timeout"
    assert held.release() is True

    engine.gate.clear()
    running = service.submit({"text": "running"}).task
    engine.wait_entered(3)
    waiting = service.submit({"text": "waiting"}).task  # its run never gets the one thread
    closer = close_in_background(service)
    try:
        abandoned = wait_terminal(service, waiting.task_id)
    finally:
        engine.gate.set()
    closer.join(WAIT_S)
    assert abandoned.error is not None
    assert abandoned.error.code == "abandoned"
    assert wait_terminal(service, running.task_id).state is TaskState.DONE
    moved = {end: finished(*end) - before[end] for end in ends}
    assert moved == {end: 2.0 if end == ("done", "") else 1.0 for end in ends}  # fine, running
    assert {name: sample(name) for name in gauges} == gauges, "nothing left pending or running"


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
    assert "could not be stored" in failed.error.message
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
    assert "failed unexpectedly" in final.error.message
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
    assert failed.error.message == "no permit within 0.05 s"
    assert failed.started_at is None, "it never ran"
    assert failed.version == 2
    wait_for(lambda: service.pending() == 0, message="the task to leave the worker")
    again = service.submit({"text": "now there is room"}).task
    assert wait_terminal(service, again.task_id).state is TaskState.DONE


def test_a_failed_start_lets_go_of_its_ledger_slot(make_service: MakeService) -> None:
    monitor = OutageMonitor()
    service = make_service(monitor=monitor, max_pending=1)
    monitor.outage.fail("start", error=RuntimeError("the store refused the write"))
    with pytest.raises(RuntimeError, match="refused"):
        service.submit({"text": "refused"})
    assert service.pending() == 0
    task = service.submit({"text": "the slot is free again"}).task
    assert wait_terminal(service, task.task_id).state is TaskState.DONE


# --- store outages ------------------------------------------------------------------------------


def test_a_start_whose_reply_was_lost_runs_once_the_store_answers(
    make_service: MakeService,
) -> None:
    monitor = OutageMonitor()
    service = make_service(monitor=monitor, record_retry_s=0.1)
    monitor.outage.writes_land = True
    monitor.outage.fail("start")
    # Still away when the executor asks, and for longer than the 0.1 s retry window.
    monitor.outage.fail("settle_start", times=4)
    with pytest.raises(BackendUnavailable):
        service.submit({"text": "its reply was lost"})
    (task,) = monitor.sent
    assert wait_terminal(service, task.task_id).state is TaskState.DONE
    wait_idle(service)


@pytest.mark.parametrize("lands", [False, True], ids=["lost", "reply-lost"])
def test_the_move_to_running_rides_out_a_short_outage(
    make_service: MakeService, lands: bool
) -> None:
    monitor = OutageMonitor()
    service = make_service(monitor=monitor)
    monitor.outage.writes_land = lands
    monitor.outage.fail("transition:running", times=2)
    task = service.submit({"text": "patience"}).task
    done = wait_terminal(service, task.task_id)
    assert (done.state, done.version, done.worker) == (TaskState.DONE, 3, WORKER)


def test_a_task_another_worker_moved_meanwhile_is_not_run_here(make_service: MakeService) -> None:
    engine = FakeEngine()
    monitor = OutageMonitor()
    service = make_service(engine, monitor=monitor)

    def another_worker_takes_it() -> None:  # while our move to running goes unanswered
        del monitor.outage.before["transition:running"]
        (task,) = monitor.sent
        InMemoryTaskMonitor.transition(
            monitor, task.task_id, expected_version=1, state=TaskState.RUNNING, now=1, worker="w:2"
        )

    monitor.outage.before["transition:running"] = another_worker_takes_it
    monitor.outage.fail("transition:running")
    task = service.submit({"text": "contested"}).task
    wait_idle(service)
    current = monitor.get(task.task_id)
    assert current is not None
    assert (current.state, current.worker) == (TaskState.RUNNING, "w:2")
    assert engine.calls == [], "it runs on the worker that moved it"


def test_a_move_to_running_unanswered_past_the_window_gives_the_task_up(
    make_service: MakeService,
) -> None:
    engine = FakeEngine()
    monitor = OutageMonitor()
    service = make_service(engine, monitor=monitor, record_retry_s=0.1)
    monitor.outage.fail("transition:running", times=1000)
    task = service.submit({"text": "given up"}).task
    wait_idle(service)  # let go: the reaper fails a live task no worker holds
    monitor.outage.end()
    current = monitor.get(task.task_id)
    assert current is not None
    assert current.state is TaskState.QUEUED
    assert engine.calls == []


def test_a_finish_rides_out_an_outage_longer_than_the_retry_window(
    make_service: MakeService,
) -> None:
    # The audio exists: a store restart must not turn it into a failure.
    monitor = OutageMonitor()
    service = make_service(monitor=monitor, record_retry_s=0.1)
    monitor.outage.fail("transition:done", times=4)  # 0.75 s of retries
    task = service.submit({"text": "worth the wait"}).task
    assert wait_terminal(service, task.task_id).state is TaskState.DONE


def test_a_refusal_of_the_store_is_not_retried(make_service: MakeService) -> None:
    monitor = OutageMonitor()
    service = make_service(monitor=monitor)
    monitor.outage.fail("transition:done", error=RuntimeError("the store refused the write"))
    task = service.submit({"text": "refused"}).task
    wait_idle(service)
    current = monitor.get(task.task_id)
    assert current is not None
    assert current.state is TaskState.RUNNING, "the refused finish was not sent again"
    assert monitor.outage.calls["transition:done"] == 1


def test_a_permit_acquire_rides_out_a_store_outage(make_service: MakeService) -> None:
    semaphore = OutageSemaphore(2, lease_ttl_s=30)
    service = make_service(semaphore=semaphore)
    semaphore.outage.fail("acquire", times=3)
    task = service.submit({"text": "patience"}).task
    assert wait_terminal(service, task.task_id).state is TaskState.DONE
    assert semaphore.outage.calls["acquire"] == 4


def test_a_permit_outage_past_the_permit_timeout_fails_the_task(make_service: MakeService) -> None:
    semaphore = OutageSemaphore(2, lease_ttl_s=30)
    service = make_service(semaphore=semaphore, permit_timeout_s=0.3)
    semaphore.outage.away = True
    task = service.submit({"text": "no permit"}).task
    failed = wait_terminal(service, task.task_id)
    assert failed.error == TaskError("permit_timeout", "no permit within 0.3 s")
    wait_for(lambda: service.pending() == 0, message="the task to leave the worker")


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


def refused_with(service: TaskService, engine: GatedEngine, pending: int, running: int) -> int:
    """The Retry-After of a 429, once `pending` tasks are held and `running` of them run."""
    try:
        for n in range(pending):
            service.submit({"text": f"task {n}"})
        engine.wait_entered(running)
        with pytest.raises(QueueFull) as caught:
            service.submit({"text": "one too many"})
    finally:
        engine.gate.set()
    wait_idle(service)
    return caught.value.retry_after_s


@pytest.mark.parametrize(
    ("limit", "threads", "pending", "retry_after_s"),
    [
        (1, 1, 2, 2),  # two tasks through one permit, at the first guess of 1 s each
        (2, 2, 2, 1),  # the same two through two permits
        (1, 2, 2, 2),  # the share is the permits the worker may hold, not its threads
        (1, 1, 61, 60),  # at most a minute
    ],
)
def test_retry_after_is_the_backlog_over_the_workers_share_of_permits(
    make_service: MakeService, limit: int, threads: int, pending: int, retry_after_s: int
) -> None:
    engine = GatedEngine()
    service = make_service(engine, limit=limit, threads=threads, max_pending=pending)
    assert refused_with(service, engine, pending, running=min(limit, threads)) == retry_after_s


def test_a_429_stays_a_429_while_the_store_is_away(make_service: MakeService) -> None:
    engine = GatedEngine()
    semaphore = OutageSemaphore(1, lease_ttl_s=30)
    service = make_service(engine, semaphore=semaphore, threads=2, max_pending=2)
    semaphore.outage.fail("limit")  # the limit unknown: the worker's threads are its share
    assert refused_with(service, engine, pending=2, running=1) == 1


def test_retry_after_follows_the_recent_synthesis_times(make_service: MakeService) -> None:
    engine = GatedEngine()
    engine.gate.set()
    service = make_service(engine, limit=1, max_pending=25)
    took = []
    for text in ("first", "second"):
        before = sample("taskmon_synthesis_seconds_sum")
        task = service.submit({"text": text}).task
        assert wait_terminal(service, task.task_id).state is TaskState.DONE
        took.append(sample("taskmon_synthesis_seconds_sum") - before)  # as the service timed it
    engine.gate.clear()
    mean_s = 1.0  # the first guess, then each synthesis moves it a fifth of the way
    for seconds in took:
        mean_s = 0.8 * mean_s + 0.2 * seconds
    expected = max(1, min(60, math.ceil(25 * mean_s)))
    assert refused_with(service, engine, pending=25, running=1) == expected


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


@pytest.mark.parametrize("same_payload", [True, False], ids=["replay", "conflict"])
def test_a_key_taken_between_the_lookup_and_the_start_answers_as_its_winner(
    make_service: MakeService, same_payload: bool
) -> None:
    # Another request with the same key starts its task after our lookup found none.
    monitor = OutageMonitor()
    service = make_service(monitor=monitor, max_pending=1)
    request = TaskRequest("first" if same_payload else "other", service.engine.check_voice(None))
    winner = Task.create(request, worker="w:2", now=1.0, idempotency_key="race")

    def the_other_request_wins() -> None:
        del monitor.outage.before["start"]
        InMemoryTaskMonitor.start(monitor, winner)

    monitor.outage.before["start"] = the_other_request_wins
    if same_payload:
        replay = service.submit({"text": "first"}, "race")
        assert (replay.replayed, replay.task) == (True, winner)
    else:
        with pytest.raises(IdempotencyConflict, match="'race'") as caught:
            service.submit({"text": "first"}, "race")
        assert caught.value.task == winner
    assert service.pending() == 0, "our task was never held past its start"
    assert service.monitor.counts().total == 1


# --- shutdown -----------------------------------------------------------------------------------


def close_in_background(service: TaskService) -> threading.Thread:
    closer = threading.Thread(target=service.close, kwargs={"timeout_s": WAIT_S}, daemon=True)
    closer.start()
    return closer


def test_close_abandons_tasks_that_never_started(make_service: MakeService, tmp_path: Path) -> None:
    engine = GatedEngine()
    journal = tmp_path / "journal"
    service = make_service(engine, limit=1, threads=1, journal=SynthesisJournal(journal))
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
        assert task.error == TaskError("abandoned", "worker shut down before the task ran")
    assert wait_terminal(service, running.task_id).state is TaskState.DONE
    assert engine.entered == 1, "an abandoned task never reaches the engine"
    # Their witness beyond the store (which, in memory mode, dies with the worker).
    assert abandoned_tasks(journal) == {t.task_id for t in waiting}
    assert check_cap(journal).syntheses == 1, "an abandoned line is no synthesis"
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


def test_close_abandons_a_task_waiting_out_a_permit_outage(make_service: MakeService) -> None:
    semaphore = OutageSemaphore(1, lease_ttl_s=30)
    service = make_service(semaphore=semaphore)  # a permit timeout of 30 s
    semaphore.outage.away = True
    task = service.submit({"text": "waiting"}).task
    wait_for(lambda: semaphore.outage.calls["acquire"] > 0, message="the task to ask for a permit")
    service.close(timeout_s=WAIT_S)
    final = service.monitor.get(task.task_id)
    assert final is not None
    assert final.error is not None
    assert final.error.code == "abandoned"
    assert service.pending() == 0, "decided within close(), not at the permit deadline"


def finish_returns(service: TaskService) -> None:
    """finish() decides what close() left, and returns (a hang fails here, not at a timeout)."""
    finisher = threading.Thread(target=service.finish, daemon=True)
    finisher.start()
    finisher.join(WAIT_S)
    assert not finisher.is_alive(), "finish() returned"
    assert service.pending() == 0


@pytest.mark.parametrize("lands", [False, True], ids=["lost", "reply-lost"])
def test_a_finish_unrecorded_when_the_worker_closes_is_decided_once_the_store_answers(
    make_service: MakeService, lands: bool
) -> None:
    abandoned = finished("failed", "abandoned")
    engine = GatedEngine()
    monitor = OutageMonitor()
    service = make_service(engine, monitor=monitor, record_retry_s=0.1)
    task = service.submit({"text": "ran into an outage"}).task
    engine.wait_entered(1)
    monitor.outage.away = True
    monitor.outage.writes_land = lands
    engine.gate.set()  # the audio is there; its `done` meets the outage
    service.close(timeout_s=0.5)
    # Closing bounds the patient retries: the run gives up, lets go of its permit, and leaves
    # the task held for the shutdown to decide.
    wait_for(lambda: service.semaphore.in_use() == 0, message="the run to give up")
    assert service.pending() == 1
    monitor.outage.end()
    finish_returns(service)
    final = monitor.get(task.task_id)
    assert final is not None
    assert final.finished_at is not None
    if lands:  # done after all: the shutdown lets it go as it is
        assert final.state is TaskState.DONE
    else:
        assert final.error == TaskError("abandoned", "worker shut down before the task ended")
    assert finished("failed", "abandoned") - abandoned == (0 if lands else 1)


@pytest.mark.parametrize("start", ["created", "lost", "reply-lost"])
def test_a_start_still_in_flight_when_the_worker_closes_is_decided_by_the_shutdown(
    make_service: MakeService, start: str
) -> None:
    monitor = OutageMonitor()
    service = make_service(monitor=monitor)
    in_flight, answer = threading.Event(), threading.Event()

    def hold_the_start() -> None:
        in_flight.set()
        assert answer.wait(WAIT_S)

    monitor.outage.before["start"] = hold_the_start
    outcome: list[BaseException] = []

    def submit() -> None:
        try:
            service.submit({"text": "in flight"})
        except (ServiceClosed, BackendUnavailable) as exc:
            outcome.append(exc)

    requester = threading.Thread(target=submit, daemon=True)
    requester.start()
    assert in_flight.wait(WAIT_S)
    service.close(timeout_s=0.2)
    assert service.pending() == 1, "close leaves a task its request is still starting"
    if start != "created":
        monitor.outage.writes_land = start == "reply-lost"
        monitor.outage.fail("start")
    answer.set()
    requester.join(WAIT_S)
    finish_returns(service)
    (task,) = monitor.sent
    final = monitor.get(task.task_id)
    if start == "lost":
        assert isinstance(outcome[0], BackendUnavailable)
        assert final is None, "never stored: dropped"
    else:
        assert isinstance(outcome[0], ServiceClosed if start == "created" else BackendUnavailable)
        assert final is not None
        assert final.error == TaskError("abandoned", "worker shut down before the task ran")


def test_leases_stay_renewed_after_close_until_the_syntheses_end(make_service: MakeService) -> None:
    engine = GatedEngine()
    service = make_service(engine, lease_ttl_s=1.0)
    task = service.submit({"text": "long"}).task
    engine.wait_entered(1)
    try:
        service.close(timeout_s=0.1)  # returns with the synthesis still running
        assert service.pending() == 1
        # Leases end in real time, so this waits: 2.5 TTLs, which the lease outlives only if
        # it is renewed (every third of a TTL) after close() as before it.
        time.sleep(2.5)
        assert [h.token for h in service.semaphore.holders()] == [task.task_id]
    finally:
        engine.gate.set()
    service.finish()
    assert wait_terminal(service, task.task_id).state is TaskState.DONE


def test_close_stops_the_lease_keeper_once_nothing_is_left(make_service: MakeService) -> None:
    before = set(threading.enumerate())
    service = make_service()
    task = service.submit({"text": "quick"}).task
    assert wait_terminal(service, task.task_id).state is TaskState.DONE
    (keeper,) = threads_named("taskmon-lease-keeper", before)
    wait_idle(service)
    service.close()
    keeper.join(WAIT_S)
    assert not keeper.is_alive()


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


# -- a permit lost mid-synthesis ---------------------------------------------------------------


class CancelBlindEngine(FakeEngine):
    """An engine that never looks at its cancel event: it finishes once `gate` opens."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def synthesize(
        self, text: str, voice: str, dest: Path, *, cancel: threading.Event | None = None
    ) -> None:
        self.entered.set()
        if not self.gate.wait(WAIT_S * 3):
            raise EngineError("the test never opened the gate")
        super().synthesize(text, voice, dest)  # cancel not passed on: it runs to its end


def test_a_synthesis_whose_permit_is_lost_stops_at_once_and_leaves_no_result(
    make_service: MakeService,
) -> None:
    clock = FakeClock()
    semaphore = InMemorySemaphore(1, lease_ttl_s=0.3, clock=clock)  # renewed every 0.1 s
    # Thirty seconds of work: only a synthesis that is stopped ends within the wait below.
    service = make_service(ToneEngine(ms_per_char=10), semaphore=semaphore)
    task = service.submit({"text": "x" * 3000}).task
    wait_for(lambda: semaphore.in_use() == 1, message="the synthesis to start")
    clock.advance(1.0)  # the lease ends unrenewed, as for a worker stalled past its TTL
    ended = wait_terminal(service, task.task_id)
    assert ended.state is TaskState.FAILED
    assert ended.error is not None
    assert ended.error.code == ErrorCode.LEASE_LOST
    assert not service.results.path_for(task.task_id).exists()


def blind_synthesis(
    make_service: MakeService, text: str
) -> tuple[TaskService, CancelBlindEngine, FakeClock, Task]:
    """A service on a semaphore with its own clock (leases of 0.3 s, renewed every 0.1 s),
    running `text` on a CancelBlindEngine that has entered its synthesis."""
    clock = FakeClock()
    engine = CancelBlindEngine()
    service = make_service(engine, semaphore=InMemorySemaphore(1, lease_ttl_s=0.3, clock=clock))
    task = service.submit({"text": text}).task
    assert engine.entered.wait(WAIT_S)
    return service, engine, clock, task


def test_an_engine_that_ignores_the_cancel_still_records_no_result_under_a_lost_permit(
    make_service: MakeService,
) -> None:
    service, engine, clock, task = blind_synthesis(make_service, "finished too late")
    before = REGISTRY.get_sample_value("taskmon_permits_lost_total") or 0.0
    clock.advance(1.0)
    wait_for(
        lambda: (REGISTRY.get_sample_value("taskmon_permits_lost_total") or 0.0) > before,
        message="the keeper to find the permit gone",
    )
    engine.gate.set()  # the engine writes its file anyway
    ended = wait_terminal(service, task.task_id)
    assert ended.error is not None
    assert ended.error.code == ErrorCode.LEASE_LOST
    assert not service.results.path_for(task.task_id).exists(), "its output was removed"


def test_a_permit_kept_to_the_end_records_the_result(make_service: MakeService) -> None:
    service, engine, clock, task = blind_synthesis(make_service, "in time")
    clock.advance(0.2)  # within the TTL: the keeper renews, nothing is lost
    engine.gate.set()
    assert wait_terminal(service, task.task_id).state is TaskState.DONE
    assert service.results.path_for(task.task_id).exists()


class RenewalsFail(InMemorySemaphore):
    """The memory semaphore whose renewals raise (the store away) until told to answer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answer: bool | None = None  # None: raise

    def renew(self, lease: Any) -> bool:
        if self.answer is None:
            raise BackendUnavailable("renewals fail in this test")
        return self.answer


def test_a_synthesis_unrenewed_for_a_whole_ttl_asks_before_recording_and_counts_the_loss(
    make_service: MakeService,
) -> None:
    semaphore = RenewalsFail(1, lease_ttl_s=0.3)
    engine = CancelBlindEngine()
    service = make_service(engine, semaphore=semaphore)
    task = service.submit({"text": "no renewal got through"}).task
    assert engine.entered.wait(WAIT_S)
    before = REGISTRY.get_sample_value("taskmon_permits_lost_total") or 0.0
    wait_for(
        lambda: all(h.expires_in_s <= 0 for h in semaphore.holders()),
        message="the lease to run out unrenewed",
    )
    semaphore.answer = False  # the permit is gone: the one question before recording says so
    engine.gate.set()
    ended = wait_terminal(service, task.task_id)
    assert ended.error is not None
    assert ended.error.code == ErrorCode.LEASE_LOST
    assert not service.results.path_for(task.task_id).exists()
    assert (REGISTRY.get_sample_value("taskmon_permits_lost_total") or 0.0) == before + 1
