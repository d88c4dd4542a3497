"""One reader's queue of one task's events: the Subscription both event hubs hand out."""

from __future__ import annotations

import queue
from collections.abc import Callable
from types import TracebackType

from taskmon.domain import TaskEvent


class QueueSubscription:
    """Events delivered by a hub, read by one SSE stream. Closing detaches it (idempotent)."""

    def __init__(
        self,
        task_id: str,
        detach: Callable[[QueueSubscription], None],
        events: queue.SimpleQueue[TaskEvent] | None = None,
    ) -> None:
        """`events`: a queue shared with other subscriptions, so one reader waits on the
        events of several hubs at once (the failover layer's Redis and memory hubs)."""
        self.task_id = task_id
        self._detach = detach
        self._events: queue.SimpleQueue[TaskEvent] = events or queue.SimpleQueue()
        self._last: TaskEvent | None = None

    def deliver(self, event: TaskEvent) -> None:
        """Never blocks: a slow reader cannot hold up the hub.

        An event equal to the one delivered just before is dropped: after a reconnection the
        Redis hub re-reads every task, and a reader can get that snapshot and the live event of
        the same state in either order. Equal events carry nothing new, so dropping is safe
        (unlocked: two threads racing here can at worst let a duplicate through).
        """
        if event == self._last:
            return
        self._last = event
        self._events.put(event)

    def get(self, timeout: float) -> TaskEvent | None:
        try:
            return self._events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def close(self) -> None:
        self._detach(self)

    def __enter__(self) -> QueueSubscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
