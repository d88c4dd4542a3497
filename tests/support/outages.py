"""The memory adapters behind a store that stops answering on demand, so the service's outage
paths run in the fast tests too (tests/integration runs the same paths on a paused Redis).

Each adapter has its own `Outage`: the next calls of a name fail (`outage.fail("start")`),
every call fails while `outage.away`, and a hook may run before a call (to hold it, or to let
another request win a race meanwhile). A write sent while the store does not answer never
arrives, or, with `outage.writes_land`, lands with its reply lost. Call names are the port's
method names; a transition is named by its target, `transition:running`.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from taskmon.domain import Task, TaskError, TaskState
from taskmon.memory import InMemorySemaphore, InMemoryTaskMonitor
from taskmon.ports import BackendUnavailable, Holder, Lease, Semaphore, StartResult, TaskMonitor

T = TypeVar("T")


class Outage:
    """What a store does instead of answering. Thread-safe."""

    def __init__(self) -> None:
        self.away = False
        self.writes_land = False
        self.calls: Counter[str] = Counter()
        self.before: dict[str, Callable[[], None]] = {}
        self._failures: dict[str, deque[BaseException | None]] = {}
        self._lock = threading.Lock()

    def fail(self, name: str, times: int = 1, error: BaseException | None = None) -> None:
        """The next `times` calls of `name` raise `error`, or BackendUnavailable if None."""
        with self._lock:
            self._failures.setdefault(name, deque()).extend([error] * times)

    def answers(self) -> bool:
        with self._lock:
            return not self.away

    def end(self) -> None:
        """The store answers again: no failure is left pending."""
        with self._lock:
            self.away = False
            self._failures.clear()

    def call(self, name: str, answer: Callable[[], T], *, writes: bool = False) -> T:
        hook = self.before.get(name)
        if hook is not None:
            hook()
        with self._lock:
            self.calls[name] += 1
            queued = self._failures.get(name)
            failing, error = self.away, None
            if queued:
                failing, error = True, queued.popleft()
        if error is not None:
            raise error
        if not failing:
            return answer()
        if writes and self.writes_land:
            answer()
        raise BackendUnavailable(f"the store did not answer {name}")


class OutageMonitor(InMemoryTaskMonitor):
    """The memory task monitor behind `outage`; `sent` lists every task a start was sent for."""

    def __init__(self, outage: Outage | None = None) -> None:
        super().__init__()
        self.outage = outage or Outage()
        self.sent: list[Task] = []

    def start(self, task: Task) -> StartResult:
        self.sent.append(task)
        return self.outage.call(
            "start", lambda: super(OutageMonitor, self).start(task), writes=True
        )

    def settle_start(self, task: Task) -> bool:
        return self.outage.call(
            "settle_start", lambda: super(OutageMonitor, self).settle_start(task)
        )

    def find_by_idempotency_key(self, key: str) -> Task | None:
        return self.outage.call(
            "find_by_idempotency_key",
            lambda: super(OutageMonitor, self).find_by_idempotency_key(key),
        )

    def transition(
        self,
        task_id: str,
        *,
        expected_version: int,
        state: TaskState,
        now: float,
        error: TaskError | None = None,
        worker: str | None = None,
        known: Task | None = None,
    ) -> Task | None:
        def answer() -> Task | None:
            return super(OutageMonitor, self).transition(
                task_id,
                expected_version=expected_version,
                state=state,
                now=now,
                error=error,
                worker=worker,
                known=known,
            )

        return self.outage.call(f"transition:{state.value}", answer, writes=True)

    def get(self, task_id: str) -> Task | None:
        return self.outage.call("get", lambda: super(OutageMonitor, self).get(task_id))

    def ping(self) -> bool:
        return self.outage.answers()


class OutageSemaphore(InMemorySemaphore):
    """The memory semaphore behind `outage`: acquire and limit fail; release and renew answer."""

    def __init__(self, limit: int, *, lease_ttl_s: float, outage: Outage | None = None) -> None:
        super().__init__(limit, lease_ttl_s=lease_ttl_s)
        self.outage = outage or Outage()

    def acquire(self, holder: Holder, *, timeout: float, token: str | None = None) -> Lease:
        return self.outage.call(
            "acquire",
            lambda: super(OutageSemaphore, self).acquire(holder, timeout=timeout, token=token),
        )

    def limit(self) -> int:
        return self.outage.call("limit", lambda: super(OutageSemaphore, self).limit())


if TYPE_CHECKING:
    # mypy proves here that both still implement their port.
    _ADAPTERS: tuple[TaskMonitor, Semaphore] = (OutageMonitor(), OutageSemaphore(1, lease_ttl_s=1))
