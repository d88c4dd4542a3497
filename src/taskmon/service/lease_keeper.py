"""One thread per worker renews every permit the worker holds, well before its lease ends.

A synthesis may outlast a lease (long texts, a slow engine); the keeper renews each held lease
every third of its TTL, so two renewals can fail in a row before the permit is lost. A renewal
that reports the permit lost is logged and counted: the synthesis goes on (its output is still
valid), but the cap may have been exceeded for that moment, which the operator must know.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from taskmon import metrics
from taskmon.ports import Lease

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def keep(self, lease: Lease) -> Iterator[Lease]:
        """Renew `lease` in the background for the duration of the block."""
        with self._lock:
            self._leases[lease.token] = lease
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
                try:
                    renewed = lease.renew()
                except Exception:
                    # A store outage: keep trying; the lease still has two intervals to live.
                    log.warning(
                        "renewing permit of task %s failed; will retry",
                        lease.holder.task_id,
                        exc_info=True,
                    )
                    continue
                if not renewed:
                    with self._lock:
                        # Released (or re-registered) while we renewed: not a loss.
                        still_held = self._leases.get(lease.token) is lease
                        if still_held:
                            self._leases.pop(lease.token, None)
                    if not still_held:
                        continue
                    metrics.PERMITS_LOST.inc()
                    log.error(
                        "permit of task %s was lost before renewal (lease ended); the global "
                        "cap may have been exceeded: look for worker stalls longer than "
                        "TASKMON_LEASE_TTL_MS",
                        lease.holder.task_id,
                    )
