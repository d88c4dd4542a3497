"""One thread per worker renews every permit the worker holds, well before its lease ends.

A synthesis may outlast a lease (long texts, a slow engine); the keeper renews each held lease
every third of its TTL, so two renewals can fail in a row before the permit is lost. A renewal
that reports the permit lost is logged and counted, and calls the holder's `on_lost`: the
service stops that synthesis at once and records no result, since another worker may hold the
permit now. `expired_locally` tells a holder whose keeper could not look in time (the worker
was stalled) that its lease may have ended: the service then asks the semaphore before it
records a result.
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


class LeaseKeeper:
    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._leases: dict[str, Lease] = {}
        self._on_lost: dict[str, Callable[[], None]] = {}
        self._renewed_at: dict[str, float] = {}  # when the last good renewal was sent
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def keep(self, lease: Lease, on_lost: Callable[[], None] | None = None) -> Iterator[Lease]:
        """Renew `lease` in the background for the duration of the block; call `on_lost`
        (from the keeper's thread) if a renewal finds the permit gone."""
        with self._lock:
            self._leases[lease.token] = lease
            self._renewed_at[lease.token] = lease.granted_at
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
            on_lost = self._on_lost.pop(lease.token, None)
        metrics.PERMITS_LOST.inc()
        log.error(
            "permit of task %s was lost (its lease ended unrenewed); the holder is told to stop "
            "and keeps no result, but the global cap may have been exceeded meanwhile: look for "
            "worker stalls longer than TASKMON_LEASE_TTL_MS",
            lease.holder.task_id,
        )
        return on_lost or (lambda: None)

    def expired_locally(self, lease: Lease) -> bool:
        """Whether a whole TTL has passed since the last renewal that was sent and succeeded
        (the lease may have ended unseen, e.g. while this worker was stopped)."""
        with self._lock:
            renewed_at = self._renewed_at.get(lease.token)
        return renewed_at is None or time.monotonic() - renewed_at >= lease.ttl_s

    def held(self) -> int:
        with self._lock:
            return len(self._leases)

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            with self._lock:
                leases = list(self._leases.values())
            for lease in leases:
                sent = time.monotonic()
                try:
                    renewed = lease.renew()
                except BackendUnavailable as exc:
                    # A store outage: keep trying; the lease still has two intervals to live.
                    log.warning("renewing permit of task %s failed (%s); will retry",
                                lease.holder.task_id, exc)  # fmt: skip
                    continue
                except Exception:
                    log.exception("renewing permit of task %s failed; will retry",
                                  lease.holder.task_id)  # fmt: skip
                    continue
                if renewed:
                    with self._lock:
                        if lease.token in self._renewed_at:
                            self._renewed_at[lease.token] = sent
                    continue
                on_lost = self._take_lost(lease)
                if on_lost is None:
                    continue  # released (or re-registered) while we renewed: not a loss
                on_lost()
