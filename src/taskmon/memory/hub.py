"""Events of this process only: a queue per subscriber, fed by publish."""

from __future__ import annotations

import queue
import threading
from collections import defaultdict

from taskmon.domain import TaskEvent
from taskmon.subscription import QueueSubscription

# Kept as a name of its own: readers of this module find the hub's subscription type.
InMemorySubscription = QueueSubscription


class InMemoryEventHub:
    """Fan-out within one process. Thread-safe; publish never blocks on a slow reader."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: defaultdict[str, set[InMemorySubscription]] = defaultdict(set)

    def publish(self, event: TaskEvent) -> None:
        with self._lock:
            targets = list(self._subscribers.get(event.task.task_id, ()))
        for subscription in targets:
            subscription.deliver(event)

    def subscribe(
        self, task_id: str, events: queue.SimpleQueue[TaskEvent] | None = None
    ) -> InMemorySubscription:
        subscription = InMemorySubscription(task_id, self.detach, events)
        with self._lock:
            self._subscribers[task_id].add(subscription)
        return subscription

    def detach(self, subscription: InMemorySubscription) -> None:
        with self._lock:
            readers = self._subscribers.get(subscription.task_id)
            if readers is not None:
                readers.discard(subscription)
                if not readers:
                    del self._subscribers[subscription.task_id]

    def subscriber_count(self) -> int:
        with self._lock:
            return sum(len(readers) for readers in self._subscribers.values())

    def close(self) -> None:
        with self._lock:
            self._subscribers.clear()
