"""The ports: what TaskService needs from a store of tasks, a semaphore and an event hub.

Two adapters implement each port: taskmon.memory (one process) and taskmon.redis (every worker
of every host). The service and the web layer only ever see these interfaces; taskmon.runtime is
the one place that picks the adapters. tests/contract/ runs each port's contract on both.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

from taskmon.domain import (
    RECENT_MAX,
    RecentTasks,
    StartOutcome,
    StateCounts,
    Task,
    TaskError,
    TaskEvent,
    TaskState,
)


class BackendUnavailable(RuntimeError):
    """The store behind a port did not answer in time. Callers degrade; they never hang."""


class BackendRefused(RuntimeError):
    """The store answered but refused the call to taskmon's user: a misconfigured ACL (a
    command, key or channel it lacks). Not an outage: nothing degrades and a retry meets the
    same refusal until an operator gives the user its rules; the web layer answers 503."""


class PermitTimeout(TimeoutError):
    """No permit was granted within the caller's timeout."""


class TaskUnknownWhileDegraded(LookupError):
    """The shared store is away and this worker does not know the task: it may exist.

    Not a 404: the task may live on another worker or in the store. Ask again once the
    worker is back on the store (the web layer answers 421 with `degraded: true`).
    """

    def __init__(self, task_id: str) -> None:
        super().__init__(
            f"task {task_id} is not known to this worker, and the shared store is away"
        )
        self.task_id = task_id


class AdmissionClosed(RuntimeError):
    """The worker admits no new task now (fallback policy `reject`, the store away)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class StartResult:
    outcome: StartOutcome
    task: Task


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What TaskMonitor.restore did: wrote the copy, or kept the store's (same or newer)."""

    written: bool
    # The task's Idempotency-Key names another task in the store (two workers took the key
    # while apart): the key stays with that task, and this one keeps running without it.
    key_conflict: bool = False
    # What the store now holds when written: the copy, or the copy one version past a
    # reaper's `abandoned` it overruled (a mirror must follow it, or it would go back).
    stored: Task | None = None


class Subscription(Protocol):
    """Events of one task, delivered to one reader (an SSE stream)."""

    def get(self, timeout: float) -> TaskEvent | None:
        """The next event, or None when `timeout` seconds pass without one."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Subscription: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class EventHub(Protocol):
    """Fans task events out to the subscribers of each task.

    Delivery is at most once: a subscriber that needs every state re-reads the snapshot after
    subscribing (the SSE stream does), so a lost event costs latency, never a missed terminal.
    """

    def publish(self, event: TaskEvent) -> None: ...

    def subscribe(self, task_id: str) -> Subscription: ...

    def close(self) -> None: ...


class TaskMonitor(Protocol):
    """The store of tasks, idempotency keys and statistics."""

    @property
    def backend(self) -> str:
        """Where the answers come from now: "redis" or "memory"."""
        ...

    def start(self, task: Task) -> StartResult:
        """Record a new queued task, atomically with its idempotency key when it has one.

        With a key already claimed: REPLAYED and the stored task when the fingerprint matches,
        CONFLICT and the stored task when it does not. Nothing is written in either case.
        """
        ...

    def settle_start(self, task: Task) -> bool:
        """After `start(task)` raised BackendUnavailable, decide whether it took effect.

        True: the task is recorded, so the caller runs it. False: it is not, and never will
        be: a late copy of the start (its reply lost, or still queued at a hung server) is
        refused. The answer is final and the same on every call. Raises BackendUnavailable
        while the store does not answer; retry until it does.
        """
        ...

    def find_by_idempotency_key(self, key: str) -> Task | None: ...

    def restore(self, task: Task) -> RestoreResult:
        """Write this copy of a task unless the store has it at this version or a newer one,
        or has it finished (a finish is final, even one at an older version), with one
        exception: a reaper's `abandoned` is a presumption, and the task's own worker's `done`
        overrules it (domain.overrules_abandoned), stored one version past the reaper's.

        The write-back after an outage: a task created or moved while this worker ran on its
        own memory, or one the store forgot (restarted empty). Counts, state index and the
        Idempotency-Key follow; a key already naming another task stays with that task.
        Publishes the event when it wrote.
        """
        ...

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
        """Move a task one step and publish the event.

        `known` is the caller's copy of the task at `expected_version`; an adapter may use it
        instead of reading the store first (its compare-and-set still checks the store).

        Returns the new task, or None when the task is gone, its version is not
        `expected_version` (a stale or repeated call) or the move is illegal: all no-ops.
        """
        ...

    def get(self, task_id: str) -> Task | None: ...

    def counts(self) -> StateCounts: ...

    def recent(self, limit: int) -> RecentTasks:
        """The newest tasks still kept (newest first, by creation time; ties by id, higher
        first), at most `limit`, and the task queued longest (None when none is queued).

        For the monitor page: each summary is one task's state at its read, not a snapshot of
        the whole store. Only the RECENT_MAX newest tasks are indexed, so a task older than
        those is never listed, however long it is kept. Raises ValueError for a limit outside
        1..RECENT_MAX (check_recent_limit), BackendUnavailable when the store does not answer.
        """
        ...

    def subscribe(self, task_id: str) -> Subscription: ...

    def ping(self) -> bool:
        """True when the store answers now (for /readyz)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a permit: shown on the monitor page, never used for ownership checks."""

    worker: str
    task_id: str


@dataclass(frozen=True, slots=True)
class HolderInfo:
    holder: Holder
    token: str
    fencing: int
    expires_in_s: float


@dataclass(frozen=True, slots=True)
class WaiterInfo:
    """Who waits for a permit, and where in the queue (1 = next granted)."""

    holder: Holder
    token: str
    position: int
    # How long it has waited, when the semaphore knows (the Redis queue keeps only order).
    waiting_s: float | None = None


@dataclass(eq=False)
class Lease:
    """A permit held under an owner token, valid until its lease ends unless renewed.

    Use it as a context manager: leaving the block releases it. `fencing` grows with every
    grant, so a resource that checks it can refuse a holder whose lease already ended.
    """

    token: str
    fencing: int
    holder: Holder
    ttl_s: float
    semaphore: Semaphore = field(repr=False)
    # When this process learnt of the grant (CLOCK_MONOTONIC): the lease runs at most ttl_s
    # from here unless renewed, whatever happens to the process meanwhile.
    granted_at: float = field(default_factory=time.monotonic, compare=False)

    def renew(self) -> bool:
        return self.semaphore.renew(self)

    def release(self) -> bool:
        return self.semaphore.release(self)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def check_limit(limit: object, name: str = "limit") -> int:
    """The limit itself when it is an int (not a bool) of at least 1; ValueError otherwise.

    The rule every Semaphore applies to its limit, at construction and in set_limit.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"{name} must be an integer of at least 1")
    return limit


def check_recent_limit(limit: object) -> int:
    """The limit itself when it is an int (not a bool) in 1..RECENT_MAX; ValueError otherwise."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= RECENT_MAX:
        raise ValueError(f"limit must be an integer from 1 to {RECENT_MAX}")
    return limit


def check_acquire(token: str | None, timeout: float) -> None:
    """ValueError for an empty token or a NaN timeout: the rule every Semaphore.acquire applies."""
    if token is not None and not token:
        raise ValueError("token must be a non-empty string")
    if math.isnan(timeout):
        raise ValueError("timeout must be a number of seconds")


class Semaphore(Protocol):
    """A counting semaphore with owned, leased permits and a limit that can change live."""

    lease_ttl_s: float

    def acquire(self, holder: Holder, *, timeout: float, token: str | None = None) -> Lease:
        """Wait up to `timeout` seconds for a permit, first come first served.

        A repeated acquire with the token of a permit still held returns that permit again
        (no second permit). A timeout of 0 tries once. Raises PermitTimeout when none was
        granted in time or the semaphore is closed, ValueError for an empty token or a NaN
        timeout.
        """
        ...

    def renew(self, lease: Lease) -> bool:
        """Extend the lease by a full TTL. False when the permit was already lost."""
        ...

    def renew_all(self, leases: Sequence[Lease]) -> list[bool]:
        """`renew` for each lease, in as few store calls as the adapter can (the lease
        keeper's tick); the answers in order. Raises as `renew` does, for the whole batch."""
        ...

    def release(self, lease: Lease) -> bool:
        """Give the permit back. False (and nothing counted) when it was no longer held."""
        ...

    def limit(self) -> int: ...

    def set_limit(self, limit: int) -> None:
        """Change the cap live. Holders over a lowered cap keep their permits until release.

        Raises ValueError unless `limit` is an int (not a bool) of at least 1.
        """
        ...

    def in_use(self) -> int: ...

    def holders(self) -> list[HolderInfo]:
        """Who holds a permit now, in grant order (fencing token)."""
        ...

    def waiters(self) -> list[WaiterInfo]:
        """Who waits for a permit now, in queue order."""
        ...

    def revoke(self, token: str) -> HolderInfo | None:
        """Free the permit held under `token`, whoever holds it (an operator's release of a
        stuck permit), and grant it to the next in line as a release does. Its holder finds
        the lease lost at its next renewal. None when no permit is held under `token`."""
        ...

    def close(self) -> None:
        """Wake every waiter with PermitTimeout; later acquires fail at once. Held permits stay."""
        ...


@dataclass(frozen=True, slots=True)
class GlobalFigures:
    """What the shared store says of the whole fleet at one instant (one atomic read).

    `limit` is None while the store holds no cap (restarted empty: the next acquire restores
    one); `oldest_queued_age_s` is None when no task is queued.
    """

    counts: StateCounts
    in_use: int
    limit: int | None
    waiters: int
    workers_alive: int
    oldest_queued_age_s: float | None


@dataclass(frozen=True, slots=True)
class KeyspaceFigures:
    """How many keys the namespace holds, from one complete pass over the keyspace."""

    keys: int
    tasks: int
    idempotency_keys: int
    # How old the pass is: it is shared by every worker for a while (the store caches it).
    age_s: float


class FigureSource(Protocol):
    """The global figures `/metrics` exports, read from the shared store at scrape time.

    Every worker reads the same store, so every worker answers the same figures. Each
    method raises BackendUnavailable when the store does not answer within its call budget.
    """

    def read(self) -> GlobalFigures: ...

    def keyspace(self) -> KeyspaceFigures | None:
        """The namespace's key counts, or None when no pass completed within its budget."""
        ...
