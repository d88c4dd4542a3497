"""The tasks one worker holds, from acceptance until their end is recorded or they are dropped.

The service's memory of its own work: the 429 bound counts it, the self-reaper asks it which
live tasks still have an owner here, and the shutdown decides every held task no thread is on.
Pure bookkeeping under one lock; no I/O.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from enum import Enum

from taskmon.domain import Task


class Mark(Enum):
    """What a held task waits on."""

    STARTING = "starting"  # its start call is in flight, in a request thread
    ACTIVE = "active"  # an executor thread is on it
    UNSETTLED = "unsettled"  # its start raised and may still land in the store


class LedgerClosed(RuntimeError):
    """The worker is shutting down: nothing new is held."""


class Ledger:
    """Thread-safe. `reserve` holds a task, `release` lets it go; marks say who is on it."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._held: dict[str, Task] = {}
        self._marks: dict[Mark, set[str]] = {mark: set() for mark in Mark}
        self._closed = False

    def reserve(self, task: Task) -> int | None:
        """Hold `task`: None when held, else how many are held (at capacity: not held).

        Raises LedgerClosed once close() was called, so no task is accepted during shutdown.
        """
        with self._lock:
            if self._closed:
                raise LedgerClosed("worker is shutting down")
            if len(self._held) >= self._capacity:
                return len(self._held)
            self._held[task.task_id] = task
            return None

    def release(self, task_id: str) -> bool:
        """Let the task go; False when it was not held (released twice is harmless)."""
        with self._lock:
            return self._held.pop(task_id, None) is not None

    def close(self) -> bool:
        """Refuse new tasks from now on; True only for the first call."""
        with self._lock:
            first, self._closed = not self._closed, True
            return first

    @property
    def closed(self) -> bool:
        return self._closed

    def mark(self, task_id: str, mark: Mark) -> None:
        with self._lock:
            self._marks[mark].add(task_id)

    def unmark(self, task_id: str, mark: Mark) -> None:
        with self._lock:
            self._marks[mark].discard(task_id)

    def has(self, task_id: str, mark: Mark) -> bool:
        with self._lock:
            return task_id in self._marks[mark]

    @contextlib.contextmanager
    def marked(self, task_id: str, mark: Mark) -> Iterator[None]:
        self.mark(task_id, mark)
        try:
            yield
        finally:
            self.unmark(task_id, mark)

    def count(self) -> int:
        with self._lock:
            return len(self._held)

    def ids(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._held)

    def unattended(self) -> list[Task]:
        """Held tasks no thread is on: the ones a shutdown must decide itself."""
        with self._lock:
            busy = self._marks[Mark.STARTING] | self._marks[Mark.ACTIVE]
            return [task for task_id, task in self._held.items() if task_id not in busy]
