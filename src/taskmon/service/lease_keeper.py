"""One thread per worker renews every permit the worker holds, well before its lease ends.

A synthesis may outlast a lease (long texts, a slow engine); the keeper renews every held lease
every third of its TTL, all of one semaphore's in one call (`renew_all`: one script on Redis),
so two renewals can fail in a row before the permit is lost; a lease whose grant gave it a
shorter first TTL (handed over to a waiter) is renewed a third into that one. A renewal that
reports the permit lost is logged and counted, and calls the holder's `on_lost`: the service
stops that synthesis at once and records no result, since another worker may hold the permit
now. `expired_locally` tells a holder whose keeper could not look in time (the worker was
stalled) that its lease may have ended: the service then asks the semaphore before it records
a result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from taskmon import metrics
from taskmon.ports import BackendUnavailable, Lease

log = logging.getLogger(__name__)

_MIN_RETRY_S = 0.01  # the shortest pause between a failed renewal and the next try


class LeaseKeeper:
    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._leases: dict[str, Lease] = {}
        self._on_lost: dict[str, Callable[[], None]] = {}
        self._renewed_at: dict[str, float] = {}  # when the last good renewal was sent
        # The lease the grant or the last renewal gave: a grant handed over to a waiter has a
        # shorter first lease than a renewal gives.
        self._ttl_s: dict[str, float] = {}
        # When each lease is next renewed: a third into its TTL, or a retry after a failure
        # (never "now" again: a failing store would be hammered in a loop).
        self._due: dict[str, float] = {}
        self._wake_at = float("inf")  # when the keeper's thread next looks
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._kick = threading.Event()  # a lease came in that is due before the next tick
        self._thread: threading.Thread | None = None

    @contextmanager
    def keep(self, lease: Lease, on_lost: Callable[[], None] | None = None) -> Iterator[Lease]:
        """Renew `lease` in the background for the duration of the block; call `on_lost`
        (from the keeper's thread) if a renewal finds the permit gone."""
        with self._lock:
            self._leases[lease.token] = lease
            self._renewed_at[lease.token] = lease.granted_at
            self._ttl_s[lease.token] = lease.ttl_s
            self._due[lease.token] = due = lease.granted_at + lease.ttl_s / 3
            if due < self._wake_at:
                self._kick.set()
            if on_lost is not None:
                self._on_lost[lease.token] = on_lost
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="taskmon-lease-keeper", daemon=True
                )
                self._thread.start()
        try:
            yield lease
        finally:
            with self._lock:
                self._leases.pop(lease.token, None)
                self._on_lost.pop(lease.token, None)
                self._renewed_at.pop(lease.token, None)
                self._ttl_s.pop(lease.token, None)
                self._due.pop(lease.token, None)

    def report_lost(self, lease: Lease) -> bool:
        """Record that `lease`'s permit is gone (the holder found out itself): counted and
        logged once, whoever finds it first. False if it was already reported or released."""
        on_lost = self._take_lost(lease)
        if on_lost is None:
            return False
        on_lost()
        return True

    def _take_lost(self, lease: Lease) -> Callable[[], None] | None:
        """Drop a kept lease found lost, count and log it, and return its callback (a no-op
        when it has none); None when it is no longer kept (released, or already reported)."""
        with self._lock:
            if self._leases.get(lease.token) is not lease:
                return None
            self._leases.pop(lease.token, None)
            self._renewed_at.pop(lease.token, None)
            self._ttl_s.pop(lease.token, None)
            self._due.pop(lease.token, None)
            on_lost = self._on_lost.pop(lease.token, None)
        metrics.PERMITS_LOST.inc()
        log.error(
            "permit of task %s was lost (its lease ended unrenewed, or an operator released "
            "it); the holder is told to stop and keeps no result, but the global cap may have "
            "been exceeded meanwhile: look for worker stalls longer than TASKMON_LEASE_TTL_MS",
            lease.holder.task_id,
        )
        return on_lost or (lambda: None)

    def expired_locally(self, lease: Lease) -> bool:
        """Whether a whole TTL has passed since the last renewal that was sent and succeeded
        (the lease may have ended unseen, e.g. while this worker was stopped)."""
        with self._lock:
            renewed_at = self._renewed_at.get(lease.token)
            ttl_s = self._ttl_s.get(lease.token, lease.ttl_s)
        return renewed_at is None or time.monotonic() - renewed_at >= ttl_s

    def held(self) -> int:
        with self._lock:
            return len(self._leases)

    def close(self) -> None:
        self._stop.set()
        self._kick.set()

    def _due_at(self, tick: float) -> float:
        """When to renew next: the tick, or sooner when a lease is due before it (a short
        first lease, or a retry after a failed renewal)."""
        with self._lock:
            self._wake_at = min([tick, *self._due.values()])
            return self._wake_at

    def _run(self) -> None:
        tick = time.monotonic() + self._interval_s
        while not self._stop.is_set():
            self._kick.wait(max(0.0, self._due_at(tick) - time.monotonic()))
            self._kick.clear()
            if self._stop.is_set():
                return
            if time.monotonic() < self._due_at(tick):
                continue  # a new lease: the wait is computed again
            tick = time.monotonic() + self._interval_s
            with self._lock:
                leases = list(self._leases.values())
            # All at once, one call per semaphore (one script on Redis).
            by_semaphore: dict[int, list[Lease]] = {}
            for lease in leases:
                by_semaphore.setdefault(id(lease.semaphore), []).append(lease)
            for group in by_semaphore.values():
                self._renew(group)

    def _renew(self, leases: list[Lease]) -> None:
        sent = time.monotonic()
        tasks = ", ".join(lease.holder.task_id for lease in leases)
        try:
            answers = leases[0].semaphore.renew_all(leases)
            if len(answers) != len(leases):
                raise RuntimeError(f"{len(answers)} answers for {len(leases)} leases")
        except BackendUnavailable as exc:
            # A store outage: keep trying; the leases still have two intervals to live.
            log.warning("renewing the permits of tasks %s failed (%s); will retry", tasks, exc)
            self._retry_later(leases, sent)
            return
        except Exception:
            log.exception("renewing the permits of tasks %s failed; will retry", tasks)
            self._retry_later(leases, sent)
            return
        for lease, renewed in zip(leases, answers, strict=True):
            if renewed:
                ttl_s = lease.semaphore.lease_ttl_s
                with self._lock:
                    if lease.token in self._renewed_at:
                        self._renewed_at[lease.token] = sent
                        self._ttl_s[lease.token] = ttl_s
                        self._due[lease.token] = sent + ttl_s / 3
                continue
            on_lost = self._take_lost(lease)
            if on_lost is None:
                continue  # released (or re-registered) while we renewed: not a loss
            on_lost()

    def _retry_later(self, leases: list[Lease], sent: float) -> None:
        """After a failed renewal: try again a sixth of the lease later (at most a tick), so
        the lease gets about two more tries before it ends, and a failing store is not
        hammered."""
        with self._lock:
            for lease in leases:
                ttl_s = self._ttl_s.get(lease.token)
                if ttl_s is not None:
                    retry_s = max(_MIN_RETRY_S, min(self._interval_s, ttl_s / 6))
                    self._due[lease.token] = sent + retry_s
