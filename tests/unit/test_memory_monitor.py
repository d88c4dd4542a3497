"""InMemoryTaskMonitor and InMemoryEventHub: storage, idempotency, retention, events, threads."""

from __future__ import annotations

import threading
from collections import Counter
from functools import partial

import pytest

from taskmon.domain import (
    StartOutcome,
    StateCounts,
    Task,
    TaskError,
    TaskEvent,
    TaskRequest,
    TaskState,
)
from taskmon.memory import InMemoryEventHub, InMemoryTaskMonitor
from tests.unit._helpers import FakeClock, run_threads

QUEUED, RUNNING, DONE, FAILED = (
    TaskState.QUEUED,
    TaskState.RUNNING,
    TaskState.DONE,
    TaskState.FAILED,
)
BOOM = TaskError("engine_error", "boom")


def make_task(text: str = "hello", key: str | None = None, voice: str | None = None) -> Task:
    return Task.create(TaskRequest(text, voice), worker="w:1", now=10.0, idempotency_key=key)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def monitor(clock: FakeClock) -> InMemoryTaskMonitor:
    return InMemoryTaskMonitor(ttl_s=100, clock=clock)


def run_to(monitor: InMemoryTaskMonitor, task: Task, final: TaskState) -> Task:
    """Drive a stored queued task to `final` through the monitor."""
    current = task
    steps = {QUEUED: [], RUNNING: [RUNNING], DONE: [RUNNING, DONE], FAILED: [RUNNING, FAILED]}
    for state in steps[final]:
        moved = monitor.transition(
            task.task_id,
            expected_version=current.version,
            state=state,
            now=20.0,
            error=BOOM if state is FAILED else None,
        )
        assert moved is not None
        current = moved
    return current


def assert_consistent(counts: StateCounts, total: int) -> None:
    assert counts.queued + counts.running + counts.done + counts.failed == counts.total == total
    assert min(counts.to_dict().values()) >= 0


# --- start and get ------------------------------------------------------------------------------


def test_settling_a_start_tells_whether_it_was_recorded(monitor: InMemoryTaskMonitor) -> None:
    recorded, never = make_task(), make_task()
    monitor.start(recorded)
    assert monitor.settle_start(recorded) is True
    assert monitor.settle_start(never) is False
    assert monitor.get(never.task_id) is None


def test_start_then_get(monitor: InMemoryTaskMonitor) -> None:
    task = make_task()
    result = monitor.start(task)
    assert result.outcome is StartOutcome.CREATED
    assert result.task == task
    assert monitor.get(task.task_id) == task
    assert monitor.get("f" * 32) is None
    assert monitor.counts() == StateCounts(queued=1)
    assert monitor.backend == "memory"
    assert monitor.ping()


def test_start_without_key_never_dedupes(monitor: InMemoryTaskMonitor) -> None:
    first, second = make_task(), make_task()
    assert monitor.start(first).outcome is StartOutcome.CREATED
    assert monitor.start(second).outcome is StartOutcome.CREATED
    assert monitor.counts().queued == 2


def test_idempotent_start_replays_the_stored_task(monitor: InMemoryTaskMonitor) -> None:
    original = make_task(key="k1")
    assert monitor.start(original).outcome is StartOutcome.CREATED
    monitor_events = monitor.subscribe(original.task_id)
    retry = make_task(key="k1")  # same payload, a fresh id
    with monitor.subscribe(retry.task_id) as retry_events:
        result = monitor.start(retry)
        assert result.outcome is StartOutcome.REPLAYED
        assert result.task == original
        assert result.task.task_id == original.task_id
        assert monitor.get(retry.task_id) is None, "nothing is written on a replay"
        assert retry_events.get(timeout=0) is None, "and nothing is published"
    assert monitor_events.get(timeout=0) is None
    monitor_events.close()
    assert monitor.counts() == StateCounts(queued=1)
    assert monitor.find_by_idempotency_key("k1") == original


def test_idempotent_start_conflict_with_another_payload(monitor: InMemoryTaskMonitor) -> None:
    original = make_task("hello", key="k1")
    monitor.start(original)
    for other in (make_task("goodbye", key="k1"), make_task("hello", key="k1", voice="low")):
        result = monitor.start(other)
        assert result.outcome is StartOutcome.CONFLICT
        assert result.task == original
        assert monitor.get(other.task_id) is None
    assert monitor.counts() == StateCounts(queued=1)
    assert monitor.find_by_idempotency_key("k1") == original


def test_replay_returns_the_current_state_of_the_stored_task(
    monitor: InMemoryTaskMonitor,
) -> None:
    original = make_task(key="k1")
    monitor.start(original)
    done = run_to(monitor, original, DONE)
    result = monitor.start(make_task(key="k1"))
    assert result.outcome is StartOutcome.REPLAYED
    assert result.task == done
    assert monitor.counts() == StateCounts(done=1)


def test_keys_are_independent(monitor: InMemoryTaskMonitor) -> None:
    a, b = make_task(key="a"), make_task(key="b")
    assert monitor.start(a).outcome is StartOutcome.CREATED
    assert monitor.start(b).outcome is StartOutcome.CREATED
    assert monitor.find_by_idempotency_key("a") == a
    assert monitor.find_by_idempotency_key("b") == b
    assert monitor.find_by_idempotency_key("c") is None


# --- transition ---------------------------------------------------------------------------------


def test_transition_moves_and_counts(monitor: InMemoryTaskMonitor) -> None:
    task = make_task()
    monitor.start(task)
    running = monitor.transition(
        task.task_id, expected_version=1, state=RUNNING, now=11.0, worker="w:2"
    )
    assert running is not None
    assert (running.state, running.version, running.started_at, running.worker) == (
        RUNNING,
        2,
        11.0,
        "w:2",
    )
    assert monitor.get(task.task_id) == running
    assert monitor.counts() == StateCounts(running=1)
    done = monitor.transition(task.task_id, expected_version=2, state=DONE, now=12.0)
    assert done is not None
    assert (done.version, done.finished_at) == (3, 12.0)
    assert monitor.counts() == StateCounts(done=1)


def test_stale_version_is_a_no_op(monitor: InMemoryTaskMonitor) -> None:
    task = make_task()
    monitor.start(task)
    assert monitor.transition(task.task_id, expected_version=1, state=RUNNING, now=1) is not None
    # The same call again (a retry) and a call with a made-up version change nothing.
    assert monitor.transition(task.task_id, expected_version=1, state=RUNNING, now=2) is None
    assert (
        monitor.transition(task.task_id, expected_version=1, state=FAILED, now=2, error=BOOM)
        is None
    )
    assert monitor.transition(task.task_id, expected_version=7, state=DONE, now=2) is None
    stored = monitor.get(task.task_id)
    assert stored is not None
    assert (stored.state, stored.version, stored.started_at) == (RUNNING, 2, 1)
    assert monitor.counts() == StateCounts(running=1)


def test_illegal_transition_is_a_no_op(monitor: InMemoryTaskMonitor) -> None:
    task = make_task()
    monitor.start(task)
    with monitor.subscribe(task.task_id) as events:
        assert monitor.transition(task.task_id, expected_version=1, state=DONE, now=1) is None
        assert monitor.transition(task.task_id, expected_version=1, state=QUEUED, now=1) is None
        # failed without an error, running with one: both break the domain rules
        assert monitor.transition(task.task_id, expected_version=1, state=FAILED, now=1) is None
        assert (
            monitor.transition(task.task_id, expected_version=1, state=RUNNING, now=1, error=BOOM)
            is None
        )
        assert events.get(timeout=0) is None, "a no-op publishes nothing"
    assert monitor.get(task.task_id) == task
    assert monitor.counts() == StateCounts(queued=1)


def test_transition_of_an_unknown_task_is_a_no_op(monitor: InMemoryTaskMonitor) -> None:
    assert monitor.transition("a" * 32, expected_version=1, state=RUNNING, now=1) is None
    assert monitor.counts() == StateCounts()


def test_terminal_tasks_do_not_move(monitor: InMemoryTaskMonitor) -> None:
    for final in (DONE, FAILED):
        task = make_task()
        monitor.start(task)
        end = run_to(monitor, task, final)
        for state in TaskState:
            error = BOOM if state is FAILED else None
            assert (
                monitor.transition(
                    task.task_id, expected_version=end.version, state=state, now=9, error=error
                )
                is None
            )
        assert monitor.get(task.task_id) == end


def test_counts_invariant_over_a_mix(monitor: InMemoryTaskMonitor) -> None:
    finals = [QUEUED] * 3 + [RUNNING] * 2 + [DONE] * 4 + [FAILED] * 1
    for n, final in enumerate(finals, start=1):
        task = make_task(f"task {n}")
        monitor.start(task)
        run_to(monitor, task, final)
        assert_consistent(monitor.counts(), n)
    counts = monitor.counts()
    assert counts == StateCounts(queued=3, running=2, done=4, failed=1)
    assert counts.success_rate == pytest.approx(0.8)


# --- retention ----------------------------------------------------------------------------------


def test_finished_tasks_and_keys_expire_after_ttl(
    monitor: InMemoryTaskMonitor, clock: FakeClock
) -> None:
    done_task = make_task("done", key="kd")
    failed_task = make_task("failed")
    waiting = make_task("waiting")
    running_task = make_task("running")
    for task in (done_task, failed_task, waiting, running_task):
        monitor.start(task)
    run_to(monitor, done_task, DONE)
    run_to(monitor, failed_task, FAILED)
    run_to(monitor, running_task, RUNNING)

    clock.advance(99.9)
    assert monitor.get(done_task.task_id) is not None
    assert monitor.get(failed_task.task_id) is not None
    assert monitor.find_by_idempotency_key("kd") is not None

    clock.advance(0.1)  # exactly ttl after they finished
    assert monitor.get(done_task.task_id) is None
    assert monitor.get(failed_task.task_id) is None
    assert monitor.find_by_idempotency_key("kd") is None

    clock.advance(10_000)  # unfinished tasks stay, however long they take
    assert monitor.get(waiting.task_id) == waiting
    stored = monitor.get(running_task.task_id)
    assert stored is not None
    assert stored.state is RUNNING
    # done and failed count every finish since the store began: expiry does not undo them
    assert monitor.counts() == StateCounts(queued=1, running=1, done=1, failed=1)


def test_expiry_counts_from_the_finish_not_the_creation(
    monitor: InMemoryTaskMonitor, clock: FakeClock
) -> None:
    task = make_task()
    monitor.start(task)
    clock.advance(80)  # a long wait in the queue
    run_to(monitor, task, DONE)
    clock.advance(99)
    assert monitor.get(task.task_id) is not None
    clock.advance(1)
    assert monitor.get(task.task_id) is None


def test_an_expired_key_can_be_used_again(monitor: InMemoryTaskMonitor, clock: FakeClock) -> None:
    first = make_task("first", key="k")
    monitor.start(first)
    run_to(monitor, first, DONE)
    clock.advance(100)
    second = make_task("another payload", key="k")
    assert monitor.start(second).outcome is StartOutcome.CREATED
    assert monitor.find_by_idempotency_key("k") == second


# --- events -------------------------------------------------------------------------------------


def test_events_arrive_in_version_order(monitor: InMemoryTaskMonitor) -> None:
    task = make_task()
    with monitor.subscribe(task.task_id) as events:
        monitor.start(task)
        run_to(monitor, task, DONE)
        received = [events.get(timeout=5) for _ in range(3)]
        assert events.get(timeout=0) is None
    assert all(isinstance(event, TaskEvent) for event in received)
    assert [e.version for e in received if e] == [1, 2, 3]
    assert [e.task.state for e in received if e] == [QUEUED, RUNNING, DONE]
    assert [e.terminal for e in received if e] == [False, False, True]


def test_every_subscriber_gets_every_event_of_its_task_only(
    monitor: InMemoryTaskMonitor,
) -> None:
    mine, other = make_task("mine"), make_task("other")
    first = monitor.subscribe(mine.task_id)
    second = monitor.subscribe(mine.task_id)
    monitor.start(mine)
    monitor.start(other)
    run_to(monitor, other, DONE)
    for subscription in (first, second):
        event = subscription.get(timeout=5)
        assert event is not None
        assert event.task == mine
        assert subscription.get(timeout=0) is None
        subscription.close()


def test_closing_a_subscription_detaches_it() -> None:
    hub = InMemoryEventHub()
    monitor = InMemoryTaskMonitor(hub=hub)
    assert monitor.hub is hub
    task = make_task()
    kept = monitor.subscribe(task.task_id)
    closed = monitor.subscribe(task.task_id)
    assert hub.subscriber_count() == 2
    closed.close()
    assert hub.subscriber_count() == 1
    closed.close()  # closing twice is harmless
    assert hub.subscriber_count() == 1
    monitor.start(task)
    assert closed.get(timeout=0) is None
    assert kept.get(timeout=5) is not None
    with monitor.subscribe(task.task_id):
        assert hub.subscriber_count() == 2
    assert hub.subscriber_count() == 1
    kept.close()
    assert hub.subscriber_count() == 0


def test_get_times_out_with_none() -> None:
    hub = InMemoryEventHub()
    with hub.subscribe("a" * 32) as subscription:
        assert subscription.get(timeout=0.01) is None
        assert subscription.get(timeout=-1) is None


def test_close_drops_every_subscriber() -> None:
    hub = InMemoryEventHub()
    monitor = InMemoryTaskMonitor(hub=hub)
    subscription = monitor.subscribe("a" * 32)
    monitor.subscribe("b" * 32)
    monitor.close()
    assert hub.subscriber_count() == 0
    subscription.close()  # still safe after the hub closed
    assert hub.subscriber_count() == 0


# --- threads ------------------------------------------------------------------------------------


def test_concurrent_starts_with_one_key_create_exactly_one_task(
    monitor: InMemoryTaskMonitor,
) -> None:
    threads = 32
    barrier = threading.Barrier(threads)
    results: list[tuple[StartOutcome, str]] = []
    lock = threading.Lock()

    def start_one() -> None:
        task = make_task(key="shared")
        barrier.wait(timeout=10)
        result = monitor.start(task)
        with lock:
            results.append((result.outcome, result.task.task_id))

    run_threads([start_one] * threads)
    outcomes = Counter(outcome for outcome, _ in results)
    assert outcomes == {StartOutcome.CREATED: 1, StartOutcome.REPLAYED: threads - 1}
    assert len({task_id for _, task_id in results}) == 1
    assert monitor.counts() == StateCounts(queued=1)
    winner = monitor.find_by_idempotency_key("shared")
    assert winner is not None
    assert winner.task_id == results[0][1]


def test_concurrent_transitions_of_one_task_let_exactly_one_win(
    monitor: InMemoryTaskMonitor,
) -> None:
    task = make_task()
    monitor.start(task)
    threads = 16
    barrier = threading.Barrier(threads)
    wins: list[Task] = []

    def attempt(n: int) -> None:
        barrier.wait(timeout=10)
        moved = monitor.transition(
            task.task_id, expected_version=1, state=RUNNING, now=1.0, worker=f"w:{n}"
        )
        if moved is not None:
            wins.append(moved)

    run_threads([partial(attempt, n) for n in range(threads)])
    assert len(wins) == 1
    assert monitor.get(task.task_id) == wins[0]
    assert monitor.counts() == StateCounts(running=1)


def test_concurrent_transitions_of_distinct_tasks_keep_counts_consistent(
    monitor: InMemoryTaskMonitor,
) -> None:
    per_thread, threads = 40, 8
    tasks = [make_task(f"t{n}") for n in range(per_thread * threads)]
    for task in tasks:
        monitor.start(task)
    total = len(tasks)
    stop = threading.Event()
    observed: list[StateCounts] = []

    def drive(chunk: list[Task]) -> None:
        for n, task in enumerate(chunk):
            run_to(monitor, task, DONE if n % 3 else FAILED)

    def watch() -> None:
        while not stop.is_set():
            observed.append(monitor.counts())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        run_threads([partial(drive, tasks[i::threads]) for i in range(threads)])
    finally:
        stop.set()
        watcher.join(10)
    assert not watcher.is_alive()
    assert observed, "the watcher sampled the counts at least once"
    for counts in observed:
        assert_consistent(counts, total)
    failed = sum(1 for i in range(threads) for n in range(per_thread) if n % 3 == 0)
    assert monitor.counts() == StateCounts(done=total - failed, failed=failed)
    assert all(
        (stored := monitor.get(t.task_id)) is not None and stored.state.terminal for t in tasks
    )
