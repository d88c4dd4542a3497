"""The TaskMonitor port's contract, run against both adapters (memory and Redis).

What one adapter promises, the other must too: service code and the web layer rely on the
port, not on an adapter. Each adapter's own file tests what only it has (expiry on a fake
clock in memory; keys, indexes, scripts and outages in Redis).
"""

from __future__ import annotations

import threading
from collections import Counter
from functools import partial

import pytest

from taskmon.domain import StartOutcome, StateCounts, Task, TaskError, TaskState
from taskmon.ports import TaskMonitor
from tests.support.monitors import Store
from tests.support.tasks import BOOM, DONE, FAILED, QUEUED, RUNNING, make_task, run_to
from tests.support.timing import run_threads

QUIET_S = 0.2  # how long "nothing was published" is watched for
EVENT_S = 5.0


def assert_consistent(counts: StateCounts, total: int) -> None:
    assert counts.queued + counts.running + counts.done + counts.failed == counts.total == total
    assert min(counts.to_dict().values()) >= 0


# --- start, get, idempotency ---------------------------------------------------------------------


def test_start_then_get(monitor: TaskMonitor) -> None:
    plain, full = make_task(), make_task("grüße 你好", key="k-1", voice="en-us")
    for task in (plain, full):
        result = monitor.start(task)
        assert (result.outcome, result.task) == (StartOutcome.CREATED, task)
        assert monitor.get(task.task_id) == task
    assert monitor.get("f" * 32) is None
    assert monitor.counts() == StateCounts(queued=2)
    assert monitor.ping()


def test_start_without_key_never_dedupes(monitor: TaskMonitor) -> None:
    assert monitor.start(make_task()).outcome is StartOutcome.CREATED
    assert monitor.start(make_task()).outcome is StartOutcome.CREATED
    assert monitor.counts() == StateCounts(queued=2)


def test_idempotent_start_replays_the_stored_task(store: Store) -> None:
    monitor = store.monitor
    original = make_task(key="k1")
    assert monitor.start(original).outcome is StartOutcome.CREATED
    before = store.written()
    retry = make_task(key="k1")  # same payload, a fresh id
    with monitor.subscribe(original.task_id) as first, monitor.subscribe(retry.task_id) as again:
        result = monitor.start(retry)
        assert (result.outcome, result.task) == (StartOutcome.REPLAYED, original)
        assert monitor.get(retry.task_id) is None, "nothing is written on a replay"
        assert again.get(timeout=QUIET_S) is None, "and nothing is published"
        assert first.get(timeout=0) is None
    assert store.written() == before
    assert monitor.counts() == StateCounts(queued=1)
    assert monitor.find_by_idempotency_key("k1") == original


def test_idempotent_start_conflict_with_another_payload(store: Store) -> None:
    monitor = store.monitor
    original = make_task("hello", key="k1")
    monitor.start(original)
    before = store.written()
    for other in (make_task("goodbye", key="k1"), make_task("hello", key="k1", voice="low")):
        result = monitor.start(other)
        assert (result.outcome, result.task) == (StartOutcome.CONFLICT, original)
        assert monitor.get(other.task_id) is None
    assert store.written() == before
    assert monitor.find_by_idempotency_key("k1") == original


def test_replay_returns_the_current_state_of_the_stored_task(monitor: TaskMonitor) -> None:
    original = make_task(key="k1")
    monitor.start(original)
    done = run_to(monitor, original, DONE)
    result = monitor.start(make_task(key="k1"))
    assert (result.outcome, result.task) == (StartOutcome.REPLAYED, done)
    assert monitor.counts() == StateCounts(done=1)


def test_keys_are_independent(monitor: TaskMonitor) -> None:
    a, b = make_task(key="a"), make_task(key="b")
    assert monitor.start(a).outcome is StartOutcome.CREATED
    assert monitor.start(b).outcome is StartOutcome.CREATED
    assert monitor.find_by_idempotency_key("a") == a
    assert monitor.find_by_idempotency_key("b") == b
    assert monitor.find_by_idempotency_key("c") is None


def test_settling_a_start_tells_whether_it_was_recorded(monitor: TaskMonitor) -> None:
    recorded, never = make_task(key="rec"), make_task(key="never")
    monitor.start(recorded)
    assert monitor.settle_start(recorded) is True
    assert monitor.settle_start(never) is False
    assert monitor.settle_start(never) is False, "the answer is final"
    assert monitor.get(never.task_id) is None
    assert monitor.find_by_idempotency_key("never") is None
    assert monitor.get(recorded.task_id) == recorded
    assert monitor.counts() == StateCounts(queued=1)


# --- transitions ---------------------------------------------------------------------------------


def test_transition_moves_and_counts(monitor: TaskMonitor) -> None:
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
    assert monitor.get(task.task_id) == done
    assert monitor.counts() == StateCounts(done=1)


def test_stale_repeated_illegal_and_unknown_are_no_ops(store: Store) -> None:
    monitor = store.monitor
    task = make_task()
    monitor.start(task)
    running = monitor.transition(task.task_id, expected_version=1, state=RUNNING, now=1)
    assert running is not None
    before = store.written()
    with monitor.subscribe(task.task_id) as events:
        attempts: list[tuple[int, TaskState, TaskError | None]] = [
            (1, RUNNING, None),  # the same call again (a retry)
            (1, FAILED, BOOM),  # stale
            (7, DONE, None),  # a made-up version
            (2, QUEUED, None),  # illegal: backwards
            (2, FAILED, None),  # illegal: failed without an error
            (2, DONE, BOOM),  # illegal: done with one
        ]
        for version, state, error in attempts:
            moved = monitor.transition(
                task.task_id, expected_version=version, state=state, now=2, error=error
            )
            assert moved is None, (version, state)
        assert monitor.transition("a" * 32, expected_version=1, state=RUNNING, now=1) is None
        assert events.get(timeout=QUIET_S) is None, "a no-op publishes nothing"
    assert store.written() == before
    assert monitor.get(task.task_id) == running
    assert monitor.counts() == StateCounts(running=1)


def test_terminal_tasks_do_not_move(monitor: TaskMonitor) -> None:
    for final in (DONE, FAILED):
        task = make_task()
        monitor.start(task)
        end = run_to(monitor, task, final)
        for state in TaskState:
            error = BOOM if state is FAILED else None
            moved = monitor.transition(
                task.task_id, expected_version=end.version, state=state, now=9, error=error
            )
            assert moved is None
        assert monitor.get(task.task_id) == end


def test_counts_over_a_mix(monitor: TaskMonitor) -> None:
    finals = [QUEUED] * 3 + [RUNNING] * 2 + [DONE] * 4 + [FAILED] * 1
    for n, final in enumerate(finals, start=1):
        task = make_task(f"task {n}")
        monitor.start(task)
        run_to(monitor, task, final)
        assert_consistent(monitor.counts(), n)
    counts = monitor.counts()
    assert counts == StateCounts(queued=3, running=2, done=4, failed=1)
    assert counts.success_rate == pytest.approx(0.8)


# --- events --------------------------------------------------------------------------------------


def test_events_arrive_in_version_order(monitor: TaskMonitor) -> None:
    task = make_task()
    with monitor.subscribe(task.task_id) as events:
        monitor.start(task)
        run_to(monitor, task, DONE)
        received = [events.get(timeout=EVENT_S) for _ in range(3)]
        assert events.get(timeout=QUIET_S) is None
    assert [(e.version, e.task.state, e.terminal) for e in received if e] == [
        (1, QUEUED, False),
        (2, RUNNING, False),
        (3, DONE, True),
    ]


def test_every_subscriber_gets_every_event_of_its_task_only(store: Store) -> None:
    mine, other = make_task("mine"), make_task("other")
    subscriptions = [store.monitor.subscribe(mine.task_id), store.another().subscribe(mine.task_id)]
    store.monitor.start(mine)
    store.monitor.start(other)
    run_to(store.monitor, other, DONE)
    for subscription in subscriptions:
        with subscription:
            event = subscription.get(timeout=EVENT_S)
            assert event is not None
            assert event.task == mine
            assert subscription.get(timeout=QUIET_S) is None


# --- workers and threads -------------------------------------------------------------------------


def test_every_worker_sees_one_truth(store: Store) -> None:
    a, b = store.monitor, store.another()
    task = make_task(key="shared")
    a.start(task)
    assert b.get(task.task_id) == task
    assert b.find_by_idempotency_key("shared") == task
    running = b.transition(task.task_id, expected_version=1, state=RUNNING, now=1.0)
    assert a.get(task.task_id) == running
    assert a.transition(task.task_id, expected_version=1, state=RUNNING, now=1.0) is None
    assert b.start(make_task(key="shared")).task == running
    assert a.counts() == b.counts() == StateCounts(running=1)


def test_concurrent_starts_with_one_key_create_exactly_one_task(store: Store) -> None:
    threads = 16
    monitors = [store.another() for _ in range(threads)]
    barrier = threading.Barrier(threads)
    results: list[tuple[StartOutcome, str]] = []
    lock = threading.Lock()

    def start_one(monitor: TaskMonitor) -> None:
        task = make_task(key="shared")
        barrier.wait(timeout=10)
        result = monitor.start(task)
        with lock:
            results.append((result.outcome, result.task.task_id))

    run_threads([partial(start_one, m) for m in monitors])
    outcomes = Counter(outcome for outcome, _ in results)
    assert outcomes == {StartOutcome.CREATED: 1, StartOutcome.REPLAYED: threads - 1}
    (winner_id,) = {task_id for _, task_id in results}
    assert store.monitor.counts() == StateCounts(queued=1)
    assert store.another().get(winner_id) is not None
    winner = store.monitor.find_by_idempotency_key("shared")
    assert winner is not None
    assert winner.task_id == winner_id


def test_concurrent_transitions_of_one_task_let_exactly_one_win(store: Store) -> None:
    monitors = [store.monitor, store.another()]
    task = make_task()
    store.monitor.start(task)
    threads = 16
    barrier = threading.Barrier(threads)
    wins: list[Task] = []

    def attempt(n: int) -> None:
        barrier.wait(timeout=10)
        moved = monitors[n % 2].transition(
            task.task_id, expected_version=1, state=RUNNING, now=1.0, worker=f"w:{n}"
        )
        if moved is not None:
            wins.append(moved)

    run_threads([partial(attempt, n) for n in range(threads)])
    assert len(wins) == 1
    assert monitors[1].get(task.task_id) == wins[0]
    assert monitors[1].counts() == StateCounts(running=1)


def test_concurrent_transitions_of_distinct_tasks_keep_counts_consistent(store: Store) -> None:
    per_thread, threads = 25, 8
    tasks = [make_task(f"t{n}") for n in range(per_thread * threads)]
    for task in tasks:
        store.monitor.start(task)
    total = len(tasks)
    stop = threading.Event()
    observed: list[StateCounts] = []
    watcher_monitor = store.another()

    def drive(chunk: list[Task]) -> None:
        for n, task in enumerate(chunk):
            run_to(store.monitor, task, DONE if n % 3 else FAILED)

    def watch() -> None:
        while not stop.is_set():
            observed.append(watcher_monitor.counts())

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
    assert store.monitor.counts() == StateCounts(done=total - failed, failed=failed)


# --- restore: the write-back after an outage ------------------------------------------------------


def test_restore_writes_a_task_the_store_lacks_with_its_count_and_key(monitor: TaskMonitor) -> None:
    task = make_task(key="k-restored")
    running = task.transition(RUNNING, now=11.0, worker="w:1")
    with monitor.subscribe(task.task_id) as events:
        result = monitor.restore(running)
        assert (result.written, result.key_conflict) == (True, False)
        event = events.get(timeout=EVENT_S)
    assert event is not None
    assert event.task == running, "the write-back is published to streams"
    assert monitor.get(task.task_id) == running
    assert monitor.counts() == StateCounts(running=1)
    assert monitor.find_by_idempotency_key("k-restored") == running
    done = monitor.transition(task.task_id, expected_version=2, state=DONE, now=12.0)
    assert done is not None, "a written-back task moves on like any other"
    assert monitor.counts() == StateCounts(done=1)


def test_restore_replaces_an_older_version_and_keeps_a_newer_one(monitor: TaskMonitor) -> None:
    task = make_task()
    monitor.start(task)
    done = task.transition(RUNNING, now=11.0, worker="w:1").transition(DONE, now=12.0)
    assert monitor.restore(done).written
    assert monitor.get(task.task_id) == done
    assert monitor.counts() == StateCounts(done=1), "the queued count gave way to done"
    assert not monitor.restore(done).written, "the same version again: kept, nothing written"
    assert not monitor.restore(task).written, "an older version never goes back"
    assert monitor.get(task.task_id) == done
    assert monitor.counts() == StateCounts(done=1)


def test_restore_leaves_a_key_taken_meanwhile_to_its_task(monitor: TaskMonitor) -> None:
    """Two workers apart took one Idempotency-Key: the key stays with the task that has it."""
    first, second = make_task(key="k-apart"), make_task(key="k-apart")
    monitor.start(first)
    result = monitor.restore(second)
    assert (result.written, result.key_conflict) == (True, True)
    assert monitor.get(second.task_id) == second, "the task itself is kept"
    assert monitor.find_by_idempotency_key("k-apart") == first
    assert monitor.counts() == StateCounts(queued=2)


def reaped_while_running(monitor: TaskMonitor) -> tuple[Task, Task]:
    """A task running on worker w:1 (v2), then failed `abandoned` by a reaper (v3)."""
    task = make_task()
    monitor.start(task)
    running = monitor.transition(task.task_id, expected_version=1, state=RUNNING, now=11.0,
                                 worker="w:1")  # fmt: skip
    assert running is not None
    reaped = monitor.transition(task.task_id, expected_version=2, state=FAILED, now=14.0,
                                error=TaskError("abandoned", "worker w:1 stopped"))  # fmt: skip
    assert reaped is not None
    return running, reaped


def test_restore_lets_a_workers_own_done_overrule_a_reapers_abandoned(
    monitor: TaskMonitor,
) -> None:
    """A worker cut off from the store (not dead) ran its task to done while another worker's
    reaper, seeing its heartbeat lapse, failed it `abandoned`: the worker's done is written
    back past the reaper's version, so readers of either see the versions go forward."""
    running, reaped = reaped_while_running(monitor)
    ran = running.transition(DONE, now=12.0)
    assert ran.version == reaped.version, "both moved on from v2: the copy is not newer"
    with monitor.subscribe(running.task_id) as events:
        assert monitor.restore(ran).written
        event = events.get(timeout=EVENT_S)
    stored = monitor.get(running.task_id)
    assert stored is not None
    assert (stored.state, stored.version) == (DONE, reaped.version + 1)
    assert event is not None
    assert event.task == stored
    assert monitor.counts() == StateCounts(done=1)
    assert not monitor.restore(ran).written, "the same done again: kept"


def test_restore_keeps_an_abandoned_task_against_another_workers_copy(
    monitor: TaskMonitor,
) -> None:
    running, reaped = reaped_while_running(monitor)
    stranger = running.transition(DONE, now=12.0, worker="w:2")
    failed_here = running.transition(FAILED, now=12.0, error=BOOM)
    assert not monitor.restore(stranger).written, "only the task's own worker overrules"
    assert not monitor.restore(failed_here).written, "a failure never overrules a failure"
    assert monitor.get(running.task_id) == reaped
    assert monitor.counts() == StateCounts(failed=1)


def test_restore_never_reopens_or_replaces_a_finished_task(monitor: TaskMonitor) -> None:
    """A reaper failed the task from `queued` (v2) while its cut-off worker ran it to done
    (v3): the finish in the store is final."""
    task = make_task()
    monitor.start(task)
    reaped = monitor.transition(task.task_id, expected_version=1, state=FAILED, now=11.0,
                                error=BOOM)  # fmt: skip
    assert reaped is not None
    ran = task.transition(RUNNING, now=11.0, worker="w:1").transition(DONE, now=12.0)
    assert not monitor.restore(ran).written
    assert monitor.get(task.task_id) == reaped
    assert monitor.counts() == StateCounts(failed=1)
