"""Tasks of this process only, in a dict guarded by one lock.

Correct for a single worker. Under `gunicorn -w N` each worker sees only its own tasks: that is
the bug taskmon exists to fix, and the harness uses it as the negative case of its checkers.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import deque
from collections.abc import Callable

from taskmon.domain import (
    RECENT_MAX,
    IllegalTransition,
    RecentTasks,
    StartOutcome,
    StateCounts,
    Task,
    TaskError,
    TaskEvent,
    TaskState,
    TaskSummary,
    idempotency_outcome,
    overrules_abandoned,
)
from taskmon.memory.hub import InMemoryEventHub, InMemorySubscription
from taskmon.ports import RestoreResult, StartResult, check_recent_limit


class InMemoryTaskMonitor:
    """TaskMonitor for one process, with the Redis adapter's retention: a finished task expires
    `ttl_s` after its finish; an Idempotency-Key `ttl_s` after its creation, and again `ttl_s`
    after its task's finish, so a replay within `ttl_s` of the finish still finds it."""

    backend = "memory"

    def __init__(
        self,
        *,
        hub: InMemoryEventHub | None = None,
        ttl_s: float = 86_400,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub or InMemoryEventHub()
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._tasks: dict[str, Task] = {}
        self._keys: dict[str, str] = {}
        self._key_deadlines: dict[str, float] = {}
        # Expiry queues in insertion order; a TTL that is the same for all keeps them sorted.
        # A key re-armed at its task's finish is queued again: only its last deadline counts.
        self._task_expiry: deque[tuple[float, str]] = deque()
        self._key_expiry: deque[tuple[float, str]] = deque()
        self._in_state = dict.fromkeys(TaskState, 0)
        # The recent index (task id -> created_at, at most RECENT_MAX: the newest) and the ids
        # of the queued tasks, so the monitor's reads never scan every task kept.
        self._recent: dict[str, float] = {}
        self._queued: set[str] = set()

    def start(self, task: Task) -> StartResult:
        with self._lock:
            self._purge_expired()
            key = task.idempotency_key
            if key is not None:
                existing = self._tasks.get(self._keys.get(key, ""))
                outcome = idempotency_outcome(existing, task.fingerprint)
                if existing is not None and outcome is not StartOutcome.CREATED:
                    return StartResult(outcome, existing)
                self._keys[key] = task.task_id
                self._arm_key(key)
            self._tasks[task.task_id] = task
            self._in_state[TaskState.QUEUED] += 1
            self._index(task, None)
        self.hub.publish(TaskEvent(task))
        return StartResult(StartOutcome.CREATED, task)

    def find_by_idempotency_key(self, key: str) -> Task | None:
        with self._lock:
            self._purge_expired()
            return self._tasks.get(self._keys.get(key, ""))

    def restore(self, task: Task, *, publish: bool = True, follow: bool = False) -> RestoreResult:
        """Keep `task` unless this store has it at its version or newer (see the port).

        `publish=False` keeps the event to the caller (the failover layer's mirror, whose
        events already went out through Redis); `follow=True` keeps any newer version, even
        over a finished copy (a mirror follows what the store decided).
        """
        with self._lock:
            self._purge_expired()
            stored = self._tasks.get(task.task_id)
            if follow:
                if stored is not None and stored.version >= task.version:
                    return RestoreResult(written=False)
            elif stored is not None and overrules_abandoned(stored, task):
                # Past the stored version, so no reader sees a version go backwards.
                task = dataclasses.replace(task, version=max(task.version, stored.version + 1))
            elif stored is not None and (stored.version >= task.version or stored.state.terminal):
                return RestoreResult(written=False)  # same, newer, or finished: final
            if stored is not None:
                self._in_state[stored.state] -= 1
            self._tasks[task.task_id] = task
            self._in_state[task.state] += 1
            self._index(task, stored)
            if task.state.terminal:
                self._task_expiry.append((self._clock() + self._ttl_s, task.task_id))
            conflict = False
            key = task.idempotency_key
            if key is not None:
                claim = self._tasks.get(self._keys.get(key, ""))
                if claim is None or claim.task_id == task.task_id:
                    self._keys[key] = task.task_id
                    self._arm_key(key)
                else:
                    conflict = True
        if publish:
            self.hub.publish(TaskEvent(task))
        return RestoreResult(written=True, key_conflict=conflict, stored=task)

    def settle_start(self, task: Task) -> bool:
        """A start in memory either raised before it wrote or wrote: the dict is the answer."""
        with self._lock:
            return task.task_id in self._tasks

    def transition(
        self,
        task_id: str,
        *,
        expected_version: int,
        state: TaskState,
        now: float,
        error: TaskError | None = None,
        worker: str | None = None,
        known: Task | None = None,  # reading the dict is as cheap as trusting it
    ) -> Task | None:
        with self._lock:
            current = self._tasks.get(task_id)
            if current is None or current.version != expected_version:
                return None
            try:
                updated = current.transition(state, now=now, error=error, worker=worker)
            except IllegalTransition:
                return None
            self._tasks[task_id] = updated
            self._in_state[current.state] -= 1
            self._in_state[state] += 1
            self._queued.discard(task_id)  # a move always leaves queued
            if state.terminal:
                self._task_expiry.append((self._clock() + self._ttl_s, task_id))
                key = current.idempotency_key
                # Renewed only while it still names this task and has not expired (Redis's
                # task_finish finds an expired key gone, or naming another task).
                if (
                    key is not None
                    and self._keys.get(key) == task_id
                    and self._key_deadlines.get(key, -math.inf) > self._clock()
                ):
                    self._arm_key(key)
        self.hub.publish(TaskEvent(updated))
        return updated

    def get(self, task_id: str) -> Task | None:
        with self._lock:
            self._purge_expired()
            return self._tasks.get(task_id)

    def tasks(self) -> list[Task]:
        """Every task kept now (finished ones until their retention ends), live ones first."""
        with self._lock:
            self._purge_expired()
            return sorted(self._tasks.values(), key=lambda task: task.state.terminal)

    def counts(self) -> StateCounts:
        with self._lock:
            return StateCounts(**{state.value: n for state, n in self._in_state.items()})

    def recent(self, limit: int) -> RecentTasks:
        """See the port. Raises ValueError for a limit outside 1..RECENT_MAX."""
        check_recent_limit(limit)
        with self._lock:
            self._purge_expired()
            newest = sorted(self._recent.items(), key=_by_creation, reverse=True)
            tasks = [self._tasks.get(task_id) for task_id, _ in newest[:limit]]
            queued = [self._tasks[task_id] for task_id in self._queued if task_id in self._tasks]
        oldest = min(queued, key=lambda task: (task.created_at, task.task_id), default=None)
        return RecentTasks(
            tasks=[TaskSummary.of(task) for task in tasks if task is not None],
            oldest_queued=None if oldest is None else TaskSummary.of(oldest),
        )

    def subscribe(self, task_id: str) -> InMemorySubscription:
        return self.hub.subscribe(task_id)

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        self.hub.close()

    def _index(self, task: Task, replaced: Task | None) -> None:
        """Index `task` (new, or a copy over `replaced`) as recent and, if so, queued."""
        if replaced is not None and replaced.state is TaskState.QUEUED:
            self._queued.discard(replaced.task_id)
        if task.state is TaskState.QUEUED:
            self._queued.add(task.task_id)
        self._recent[task.task_id] = task.created_at
        if len(self._recent) > RECENT_MAX:  # one over at most: drop the oldest
            del self._recent[min(self._recent.items(), key=_by_creation)[0]]

    def _arm_key(self, key: str) -> None:
        deadline = self._clock() + self._ttl_s
        self._key_deadlines[key] = deadline
        self._key_expiry.append((deadline, key))

    def _purge_expired(self) -> None:
        now = self._clock()
        while self._task_expiry and self._task_expiry[0][0] <= now:
            self._tasks.pop(self._task_expiry.popleft()[1], None)
        while self._key_expiry and self._key_expiry[0][0] <= now:
            key = self._key_expiry.popleft()[1]
            if self._key_deadlines.get(key, now) <= now:  # else re-armed since
                self._keys.pop(key, None)
                self._key_deadlines.pop(key, None)


def _by_creation(entry: tuple[str, float]) -> tuple[float, str]:
    """A recent index entry's order: creation time, then id (as Redis orders equal scores)."""
    task_id, created_at = entry
    return created_at, task_id
