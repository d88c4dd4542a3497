"""What only the memory adapters have: expiry on a settable clock, the hub's subscriptions.

The TaskMonitor contract both adapters share is tests/contract/test_task_monitor.py.
"""

from __future__ import annotations

import pytest

from taskmon.domain import (
    StartOutcome,
    StateCounts,
)
from taskmon.memory import InMemoryEventHub, InMemoryTaskMonitor
from tests.support.tasks import DONE, FAILED, RUNNING, make_task, run_to
from tests.support.timing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def monitor(clock: FakeClock) -> InMemoryTaskMonitor:
    return InMemoryTaskMonitor(ttl_s=100, clock=clock)


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


def test_the_finish_restarts_the_retention_of_the_key(
    monitor: InMemoryTaskMonitor, clock: FakeClock
) -> None:
    # As in Redis: a replay within the TTL of the finish finds the task, however long the task
    # waited before it ran.
    task = make_task(key="k")
    monitor.start(task)
    clock.advance(80)
    run_to(monitor, task, DONE)
    clock.advance(99)  # 179 s after the key was made, 99 s after the finish
    assert monitor.find_by_idempotency_key("k") is not None
    assert monitor.start(make_task(key="k")).outcome is StartOutcome.REPLAYED
    clock.advance(1)
    assert monitor.find_by_idempotency_key("k") is None


def test_a_key_expires_while_its_task_is_still_live(
    monitor: InMemoryTaskMonitor, clock: FakeClock
) -> None:
    # Retention of a key starts at its creation; a task that outlives it (queued or running
    # for longer than the TTL) stays, and its key is free for a new task from then on.
    task = make_task(key="k")
    monitor.start(task)
    run_to(monitor, task, RUNNING)
    clock.advance(99.999)
    assert monitor.find_by_idempotency_key("k") is not None
    clock.advance(0.001)  # exactly the TTL
    assert monitor.find_by_idempotency_key("k") is None
    assert monitor.get(task.task_id) is not None
    assert monitor.start(make_task("another", key="k")).outcome is StartOutcome.CREATED


def test_the_finish_does_not_revive_a_key_that_already_expired(
    monitor: InMemoryTaskMonitor, clock: FakeClock
) -> None:
    # Nothing reads the monitor between the key's expiry and the finish: the finish must not
    # find the stale entry and renew it (Redis's key is simply gone by then).
    task = make_task(key="k")
    monitor.start(task)
    clock.advance(150)
    run_to(monitor, task, DONE)
    clock.advance(10)
    assert monitor.find_by_idempotency_key("k") is None
    assert monitor.get(task.task_id) is not None, "the task itself is kept from its finish"


def test_a_finish_at_the_instant_its_key_expires_does_not_renew_it(
    monitor: InMemoryTaskMonitor, clock: FakeClock
) -> None:
    # Expired means at its deadline, for the finish as for every read.
    task = make_task(key="k")
    monitor.start(task)
    running = run_to(monitor, task, RUNNING)
    clock.advance(100)  # exactly the key's TTL, and nothing has read the monitor since
    done = monitor.transition(task.task_id, expected_version=running.version, state=DONE, now=1)
    assert done is not None
    assert monitor.find_by_idempotency_key("k") is None


def test_a_finish_renews_only_a_key_that_still_names_its_task(
    monitor: InMemoryTaskMonitor, clock: FakeClock
) -> None:
    # The key of a long-running task expired and a new task took it: the old task's finish
    # must not stretch the new task's retention.
    old = make_task("old", key="k")
    monitor.start(old)
    running = run_to(monitor, old, RUNNING)
    clock.advance(100)
    new = make_task("new", key="k")
    assert monitor.start(new).outcome is StartOutcome.CREATED
    clock.advance(60)
    finished = monitor.transition(old.task_id, expected_version=running.version, state=DONE, now=1)
    assert finished is not None
    clock.advance(40)  # the TTL after the new task's start, 40 s after the old one's finish
    assert monitor.find_by_idempotency_key("k") is None
    assert monitor.get(new.task_id) == new, "a live task stays; only its key expired"


def test_expiry_leaves_nothing_behind(monitor: InMemoryTaskMonitor, clock: FakeClock) -> None:
    # A worker in memory mode runs for weeks: what expired must not linger in any index.
    for n in range(3):
        task = make_task(f"task {n}", key=f"k{n}")
        monitor.start(task)
        clock.advance(30)
        run_to(monitor, task, DONE)  # re-arms its key
    clock.advance(100)
    assert monitor.get(task.task_id) is None
    with monitor._lock:
        indexes = (
            monitor._tasks,
            monitor._keys,
            monitor._key_deadlines,
            monitor._task_expiry,
            monitor._key_expiry,
        )
        assert [len(index) for index in indexes] == [0] * 5


def test_an_expired_key_can_be_used_again(monitor: InMemoryTaskMonitor, clock: FakeClock) -> None:
    first = make_task("first", key="k")
    monitor.start(first)
    run_to(monitor, first, DONE)
    clock.advance(100)
    second = make_task("another payload", key="k")
    assert monitor.start(second).outcome is StartOutcome.CREATED
    assert monitor.find_by_idempotency_key("k") == second


# --- events -------------------------------------------------------------------------------------


def test_closing_a_subscription_detaches_it() -> None:
    hub = InMemoryEventHub()
    monitor = InMemoryTaskMonitor(hub=hub)
    assert (monitor.hub, monitor.backend) == (hub, "memory")
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
