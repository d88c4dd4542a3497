"""The TaskMonitor port over Redis, with this worker's own memory behind it.

While Redis answers, every call goes to Redis, and a mirror in memory keeps this worker's own
tasks (the ones it created; finished ones for `mirror_ttl_s`). When Redis comes back without its
data (restarted without persistence, flushed), the mirror is written back whole: every task the
worker still holds, and the ones it finished within that retention. The first call Redis does not
answer trips the Failover, and from then on:

- new tasks are recorded in memory (policy `partition`), or refused with AdmissionClosed
  (policy `reject`); idempotency keys are checked against this worker's own keys only;
- moves of this worker's tasks (running, done, failed) are recorded in memory;
- reads of tasks this worker knows answer from memory; reads of any other task raise
  TaskUnknownWhileDegraded (it may exist on another worker or in Redis), never a "not found";
- streams get the events of the memory store, and counts are this worker's own.

Everything recorded in memory is kept as "unsynced" until written back: at re-promotion (under
the Failover's lock, so nothing slips between the last write and the flip) and, as a safety net,
at every healthy check. The write-back (RedisTaskMonitor.restore) writes a copy only over an
older version, so no version goes backwards and nothing is duplicated: a task's id is its own.

Idempotency keys taken while apart: two workers that each accepted the same key while degraded
each run their own task; at the write-back the first task written keeps the key, and the second
is written without it (logged, counted as a key conflict): a replay then finds the first.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from taskmon import metrics
from taskmon.domain import (
    RecentTasks,
    StartOutcome,
    StateCounts,
    Task,
    TaskError,
    TaskEvent,
    TaskState,
    overrules_abandoned,
)
from taskmon.failover.switch import Failover
from taskmon.memory import InMemoryEventHub, InMemoryTaskMonitor
from taskmon.memory.hub import InMemorySubscription
from taskmon.ports import (
    AdmissionClosed,
    BackendUnavailable,
    RestoreResult,
    StartResult,
    TaskUnknownWhileDegraded,
)
from taskmon.redis.hub import RedisSubscription
from taskmon.redis.monitor import RedisTaskMonitor
from taskmon.subscription import QueueSubscription

log = logging.getLogger(__name__)

_REJECT_RETRY_AFTER_S = 2


def close_all(parts: list[RedisSubscription | InMemorySubscription]) -> None:
    for part in parts:
        part.close()


class FailoverTaskMonitor:
    """TaskMonitor: Redis while it answers, this worker's memory while it does not."""

    def __init__(
        self, primary: RedisTaskMonitor, failover: Failover, *, mirror_ttl_s: float
    ) -> None:
        self._primary = primary
        self._failover = failover
        self._local = InMemoryTaskMonitor(hub=InMemoryEventHub(), ttl_s=mirror_ttl_s)
        self._unsynced: dict[str, Task] = {}
        self._unsynced_lock = threading.Lock()
        self.key_conflicts = 0
        failover.join(self)

    @property
    def backend(self) -> str:
        return "memory" if self._failover.degraded else "redis"

    # -- the port --------------------------------------------------------------------------

    def start(self, task: Task) -> StartResult:
        sent = False  # whether a start of this task may have reached Redis
        while True:
            if not self._failover.degraded:
                try:
                    started = self._start_on_redis(task, resent=sent)
                except BackendUnavailable as exc:
                    # It may have landed, reply lost: so it is recorded here and run (even
                    # under `reject`: refusing it could leave a task nobody runs), and the
                    # write-back never overwrites a version Redis already has.
                    sent = True
                    self._failover.trip(exc)
                else:
                    if started.outcome is StartOutcome.CREATED:
                        self._local.restore(task, publish=False)
                    return started
            if self._failover.policy == "reject" and not sent:
                raise AdmissionClosed(
                    "Redis is away and TASKMON_FALLBACK_POLICY=reject: no new task is admitted "
                    "until it is back",
                    _REJECT_RETRY_AFTER_S,
                )
            with self._failover.lock:
                if self._failover.degraded:
                    started = self._local.start(task)
                    if started.outcome is StartOutcome.CREATED:
                        self._keep(task)
                    return started
            # Re-promoted while this call waited for the lock: Redis again.

    def _start_on_redis(self, task: Task, *, resent: bool) -> StartResult:
        try:
            return self._primary.start(task)
        except ValueError:
            # A start sent again after one whose reply was lost: the first one landed.
            if resent and self._primary.get(task.task_id) == task:
                return StartResult(StartOutcome.CREATED, task)
            raise

    def settle_start(self, task: Task) -> bool:
        if self._local.get(task.task_id) is not None:
            return True
        return self._primary.settle_start(task)

    def find_by_idempotency_key(self, key: str) -> Task | None:
        if not self._failover.degraded:
            try:
                return self._primary.find_by_idempotency_key(key)
            except BackendUnavailable as exc:
                self._failover.trip(exc)
        return self._local.find_by_idempotency_key(key)

    def restore(self, task: Task) -> RestoreResult:
        return self._primary.restore(task)

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
        def move() -> Task | None:
            return self._primary.transition(
                task_id, expected_version=expected_version, state=state, now=now, error=error,
                worker=worker, known=known,
            )  # fmt: skip

        while True:
            if not self._failover.degraded:
                try:
                    updated = self._on_redis(task_id, expected_version, move, state, now, worker)
                except BackendUnavailable as exc:
                    self._failover.trip(exc)
                else:
                    if updated is not None:
                        self._local.restore(updated)  # to streams opened while degraded
                    return updated
            with self._failover.lock:
                if self._failover.degraded:
                    if self._local.get(task_id) is None and known is not None:
                        self._local.restore(known, publish=False)
                    updated = self._local.transition(
                        task_id, expected_version=expected_version, state=state, now=now,
                        error=error, worker=worker,
                    )  # fmt: skip
                    if updated is not None:
                        self._keep(updated)
                    return updated
            # Re-promoted while this call waited for the lock: Redis again (a first try that
            # landed with its reply lost is told apart by the caller's re-read).

    def _on_redis(  # noqa: PLR0917
        self,
        task_id: str,
        expected_version: int,
        move: Callable[[], Task | None],
        state: TaskState,
        now: float,
        worker: str | None,
    ) -> Task | None:
        updated = move()
        if updated is not None:
            return updated
        # Redis may be behind our copy: it forgot the task (restarted empty a moment ago,
        # before the epoch check noticed), or a move recorded here has not been written back
        # yet. Then our copy at the expected version is written back, and moved.
        stored = self._primary.get(task_id)
        mine = self._local.get(task_id)
        behind = stored is None or (stored.version < expected_version and not stored.state.terminal)
        if mine is not None and mine.version == expected_version and behind:
            self._write(mine)
            return move()
        if (
            stored is not None
            and mine is not None
            and mine.version == expected_version
            and state is TaskState.DONE
            and mine.can_become(TaskState.DONE)
        ):
            # A reaper failed it `abandoned` while this worker was cut off and ran it on:
            # the done it reached now overrules that presumption (one version past it).
            done = mine.transition(TaskState.DONE, now=now, worker=worker)
            if overrules_abandoned(stored, done):
                result = self._primary.restore(done)
                if result.stored is not None:
                    self._local.restore(result.stored, publish=False, follow=True)
                return result.stored
        if stored is not None and mine is not None and stored.version > mine.version:
            self._local.restore(stored, publish=False)  # moved elsewhere (a reaper): follow
        return None

    def get(self, task_id: str) -> Task | None:
        if not self._failover.degraded:
            try:
                stored = self._primary.get(task_id)
            except BackendUnavailable as exc:
                self._failover.trip(exc)
            else:
                with self._unsynced_lock:
                    kept = self._unsynced.get(task_id)
                if kept is not None and (stored is None or stored.version < kept.version):
                    return kept  # not written back yet
                if stored is None and self._failover.settling():
                    # Another worker may not have written back what it accepted while
                    # degraded yet: "unknown for now", not "does not exist".
                    mine = self._local.get(task_id)
                    if mine is None:
                        raise TaskUnknownWhileDegraded(task_id)
                    return mine
                return stored
        task = self._local.get(task_id)
        if task is None:
            raise TaskUnknownWhileDegraded(task_id)
        return task

    def counts(self) -> StateCounts:
        if not self._failover.degraded:
            try:
                return self._primary.counts()
            except BackendUnavailable as exc:
                self._failover.trip(exc)
        return self._local.counts()

    def recent(self, limit: int) -> RecentTasks:
        """Redis's list while it answers; while degraded this worker's own tasks (the mirror:
        those it created, finished ones within its retention), as the counts are."""
        if not self._failover.degraded:
            try:
                return self._primary.recent(limit)
            except BackendUnavailable as exc:
                self._failover.trip(exc)
        return self._local.recent(limit)

    def subscribe(self, task_id: str) -> QueueSubscription:
        """One reader of the task's events from both hubs (memory and, while Redis answers,
        Redis) on one shared queue; closing it detaches it from both."""
        events: queue.SimpleQueue[TaskEvent] = queue.SimpleQueue()
        parts: list[RedisSubscription | InMemorySubscription] = [
            self._local.hub.subscribe(task_id, events)
        ]
        if not self._failover.degraded and self._primary.hub.connected:
            try:
                parts.append(self._primary.hub.subscribe(task_id, events))
            except BackendUnavailable as exc:
                self._failover.trip(exc)  # the stream goes on from memory and re-reads
        return QueueSubscription(task_id, lambda _: close_all(parts), events)

    def ping(self) -> bool:
        """Whether Redis answers now. A failed ping degrades the worker (a load balancer's
        /readyz may be the only traffic an idle worker gets); while degraded, the probing
        thread's last word stands in for a ping that would wait out the timeouts."""
        if self._failover.degraded:
            return False
        answered = self._primary.ping()
        if not answered:
            self._failover.trip(BackendUnavailable("Redis did not answer PING"))
        return answered

    def close(self) -> None:
        self._local.close()
        self._primary.close()

    def unsynced_ids(self) -> frozenset[str]:
        """Tasks whose last state is only in this worker's memory (not written back yet)."""
        with self._unsynced_lock:
            return frozenset(self._unsynced)

    def _keep(self, task: Task) -> None:
        with self._unsynced_lock:
            self._unsynced[task.task_id] = task

    # -- the Failover's participant ----------------------------------------------------------

    def on_degrade(self) -> None:
        pass  # the mirror is already there: nothing to set up

    def write_back(self, *, store_lost: bool) -> int:
        """Write back every unsynced task and, when Redis lost its data, every task this
        worker still knows: the live ones (their clients' next reads must find them) and
        the ones it finished within the mirror's retention."""
        written = self._write_unsynced()
        if store_lost:
            for task in self._local.tasks():
                written += self._write(task)
        return written

    def on_promote(self, *, store_lost: bool) -> int:
        return self._write_unsynced()

    def refresh(self) -> None:
        if self._unsynced:  # recorded here in a race with a re-promotion
            self._write_unsynced()

    def _write_unsynced(self) -> int:
        with self._unsynced_lock:
            pending = list(self._unsynced.values())
        written = 0
        for task in pending:
            written += self._write(task)
            with self._unsynced_lock:
                if self._unsynced.get(task.task_id) is task:  # else it moved again meanwhile
                    del self._unsynced[task.task_id]
        return written

    def _write(self, task: Task) -> int:
        result = self._primary.restore(task)
        if result.key_conflict:
            self.key_conflicts += 1
            log.warning(
                "task %s: its Idempotency-Key names another task in Redis (both workers "
                "accepted the key while Redis was away); the key stays with that task",
                task.task_id,
            )
        if result.written:
            metrics.WRITTEN_BACK.labels("task").inc()
            if result.stored is not None and result.stored.version != task.version:
                # Written past a reaper's version: the mirror follows, so a later outage
                # never answers the older version.
                self._local.restore(result.stored, publish=False, follow=True)
        return int(result.written)
