"""What TaskService.submit refuses with, beyond invalid input: each maps to one HTTP answer."""

from __future__ import annotations

from taskmon.domain import Task


class QueueFull(RuntimeError):
    """This worker holds max_pending unfinished tasks; the client should retry later."""

    def __init__(self, pending: int, retry_after_s: int) -> None:
        super().__init__(f"this worker already holds {pending} unfinished tasks")
        self.retry_after_s = retry_after_s


class IdempotencyConflict(RuntimeError):
    """The Idempotency-Key was first used with another payload."""

    def __init__(self, key: str, task: Task) -> None:
        super().__init__(f"Idempotency-Key {key!r} was already used with a different payload")
        self.task = task


class ServiceClosed(RuntimeError):
    """The worker is shutting down and accepts no new task."""


class Draining(RuntimeError):
    """An operator ordered this worker to drain: it finishes what it holds and admits nothing
    new, so the client retries (another worker, through the load balancer)."""

    retry_after_s = 1
