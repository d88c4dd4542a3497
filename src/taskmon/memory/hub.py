"""Events of this process only: a queue per subscriber, fed by publish."""

from __future__ import annotations

import queue
import threading
from collections import defaultdict
from types import TracebackType

from taskmon.domain import TaskEvent


class InMemorySubscription:
    """One reader's queue of events for one task. Closing it detaches it from the hub."""

    def __init__(self, hub: InMemoryEventHub, task_id: str) -> None:
        self.task_id = task_id
        self._hub = hub
        self._events: queue.SimpleQueue[TaskEvent] = queue.SimpleQueue()

    def deliver(self, event: TaskEvent) -> None:
        self._events.put(event)

    def get(self, timeout: float) -> TaskEvent | None:
        try:
            return self._events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def close(self) -> None:
        self._hub.detach(self)

    def __enter__(self) -> InMemorySubscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


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

    def subscribe(self, task_id: str) -> InMemorySubscription:
        subscription = InMemorySubscription(self, task_id)
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
