"""QueueSubscription: what a reader gets from a hub."""

from __future__ import annotations

import queue

from taskmon.domain import Task, TaskEvent, TaskRequest, TaskState
from taskmon.subscription import QueueSubscription

QUEUED = TaskEvent(Task.create(TaskRequest("hi"), worker="w", now=1.0, task_id="t1"))
RUNNING = TaskEvent(QUEUED.task.transition(TaskState.RUNNING, now=2.0))


def drain(subscription: QueueSubscription) -> list[TaskEvent]:
    events = []
    while (event := subscription.get(timeout=0)) is not None:
        events.append(event)
    return events


def test_an_event_equal_to_the_last_one_delivered_is_dropped() -> None:
    # A re-read snapshot and the live event of the same state, in either order.
    subscription = QueueSubscription("t1", lambda _: None)
    for event in (QUEUED, QUEUED, RUNNING, RUNNING):
        subscription.deliver(event)
    assert drain(subscription) == [QUEUED, RUNNING]


def test_a_state_seen_before_but_not_last_is_delivered_again() -> None:
    # Only back-to-back equals are duplicates; an older state coming back (Redis restarted
    # empty, the task re-created) is news the reader judges by version itself.
    subscription = QueueSubscription("t1", lambda _: None)
    for event in (QUEUED, RUNNING, QUEUED):
        subscription.deliver(event)
    assert drain(subscription) == [QUEUED, RUNNING, QUEUED]


def test_readers_sharing_one_queue_are_judged_each_on_its_own() -> None:
    # The failover layer merges a Redis and a memory subscription into one queue.
    shared: queue.SimpleQueue[TaskEvent] = queue.SimpleQueue()
    redis_side = QueueSubscription("t1", lambda _: None, shared)
    memory_side = QueueSubscription("t1", lambda _: None, shared)
    redis_side.deliver(QUEUED)
    memory_side.deliver(QUEUED)
    assert drain(redis_side) == [QUEUED, QUEUED]
