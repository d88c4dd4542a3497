"""A leased, owned, FIFO counting semaphore for the threads of one process.

It keeps the same promises as the Redis semaphore so both pass one state-machine test: owner
tokens, a repeated acquire is a no-op, leases that end unless renewed, fencing tokens that grow
with every grant, a release after the lease ended reported as False and never counted.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from taskmon.ports import (
    Holder,
    HolderInfo,
    Lease,
    PermitTimeout,
    WaiterInfo,
    check_acquire,
    check_limit,
)

# Waiters re-check at least this often, so a lease that ends with nobody releasing it (its
# holder died) frees a permit promptly even though no notify() announces it.
_MAX_WAIT_SLICE_S = 0.25


@dataclass(slots=True)
class _Grant:
    holder: Holder
    fencing: int
    expires_at: float


class InMemorySemaphore:
    """Semaphore for one process. Thread-safe; waiters are served first come first served."""

    def __init__(
        self,
        limit: int,
        *,
        lease_ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_limit(limit)
        self.lease_ttl_s = lease_ttl_s
        self._limit = limit
        self._clock = clock
        self._cond = threading.Condition()
        self._grants: dict[str, _Grant] = {}
        self._queue: deque[str] = deque()
        self._waiting: dict[str, tuple[Holder, float]] = {}  # token -> who, since (clock)
        self._fencing = 0
        self._closed = False

    def acquire(self, holder: Holder, *, timeout: float, token: str | None = None) -> Lease:
        check_acquire(token, timeout)
        token = token or uuid.uuid4().hex
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            if self._closed:
                raise PermitTimeout("semaphore closed: the worker is shutting down")
            self._purge_expired()
            if token in self._grants:
                return self._lease(token)
            self._queue.append(token)
            self._waiting[token] = (holder, self._clock())
            try:
                while True:
                    if self._closed:
                        raise PermitTimeout("semaphore closed: the worker is shutting down")
                    self._purge_expired()
                    if self._queue[0] == token and len(self._grants) < self._limit:
                        self._queue.popleft()
                        self._fencing += 1
                        self._grants[token] = _Grant(
                            holder, self._fencing, self._clock() + self.lease_ttl_s
                        )
                        # The next in line may fit too (the limit may have been raised).
                        self._cond.notify_all()
                        return self._lease(token)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise PermitTimeout(f"no permit within {timeout:.3g} s")
                    self._cond.wait(min(remaining, _MAX_WAIT_SLICE_S))
            finally:
                self._waiting.pop(token, None)
                if token in self._queue:
                    self._queue.remove(token)
                    self._cond.notify_all()

    def adopt(self, holder: Holder, token: str) -> Lease:
        """Count a permit held elsewhere (a Redis lease carried into degraded mode) as held
        here, over the limit if need be, like a holder kept over a lowered cap. A token
        already held keeps its grant."""
        with self._cond:
            self._purge_expired()
            if token not in self._grants:
                self._fencing += 1
                self._grants[token] = _Grant(
                    holder, self._fencing, self._clock() + self.lease_ttl_s
                )
            return self._lease(token)

    def renew(self, lease: Lease) -> bool:
        with self._cond:
            self._purge_expired()
            grant = self._grants.get(lease.token)
            if grant is None or grant.fencing != lease.fencing:
                return False
            grant.expires_at = self._clock() + self.lease_ttl_s
            return True

    def renew_all(self, leases: Sequence[Lease]) -> list[bool]:
        return [self.renew(lease) for lease in leases]

    def release(self, lease: Lease) -> bool:
        with self._cond:
            self._purge_expired()
            grant = self._grants.get(lease.token)
            # The fencing check stops an old lease from releasing a later grant of its token.
            if grant is None or grant.fencing != lease.fencing:
                return False
            del self._grants[lease.token]
            self._cond.notify_all()
            return True

    def limit(self) -> int:
        return self._limit

    def set_limit(self, limit: int) -> None:
        check_limit(limit)
        with self._cond:
            self._limit = limit
            self._cond.notify_all()

    def in_use(self) -> int:
        with self._cond:
            self._purge_expired()
            return len(self._grants)

    def holders(self) -> list[HolderInfo]:
        with self._cond:
            self._purge_expired()
            now = self._clock()
            infos = [
                HolderInfo(grant.holder, token, grant.fencing, grant.expires_at - now)
                for token, grant in self._grants.items()
            ]
            return sorted(infos, key=lambda info: info.fencing)  # grant order, as in Redis

    def waiters(self) -> list[WaiterInfo]:
        with self._cond:
            now = self._clock()
            found = []
            for position, token in enumerate(self._queue, start=1):
                holder, since = self._waiting.get(token, (Holder("", ""), now))
                found.append(WaiterInfo(holder, token, position, now - since))
            return found

    def revoke(self, token: str) -> HolderInfo | None:
        with self._cond:
            self._purge_expired()
            grant = self._grants.pop(token, None)
            if grant is None:
                return None
            self._cond.notify_all()  # the head of the queue takes it
            return HolderInfo(grant.holder, token, grant.fencing, grant.expires_at - self._clock())

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _lease(self, token: str) -> Lease:
        grant = self._grants[token]
        return Lease(token, grant.fencing, grant.holder, self.lease_ttl_s, self)

    def _purge_expired(self) -> None:
        now = self._clock()
        expired = [token for token, grant in self._grants.items() if grant.expires_at <= now]
        for token in expired:
            del self._grants[token]
        if expired:
            self._cond.notify_all()
