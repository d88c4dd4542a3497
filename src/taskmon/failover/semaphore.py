"""The Semaphore port over Redis, with this worker's share of the cap behind it.

While Redis answers, permits come from the Redis semaphore (one global cap). When the Failover
trips, every permit this worker holds is adopted by a local semaphore whose limit is the
worker's share (failover.share), over that limit if need be: the work already running counts
against the share, and nothing new is granted until it fits. Then:

- policy `partition`: new permits come from the local semaphore, up to the share;
- policy `reject`: no permit is granted; waiters wait for the re-promotion (or their timeout).

Renewals of a Redis permit while degraded renew its local adoption and answer True: a holder
is never stopped because Redis is away, only because its own lease lapsed (the worker stalled
for longer than a TTL). Before the switch back flips, every permit still held is re-registered
in Redis (RedisSemaphore.reclaim, over the limit if need be), so the global count includes it
before this worker admits anything new through Redis.

The bound this gives (docs/invariants.md, I6): with Redis away for every worker, at most the sum
over workers of max(share, permits carried over) run at once, which is the limit once what was
carried over has ended; around each switch, permits granted by the workers still on Redis add
to those of the workers already degraded (or not yet re-promoted), for at most one probe
interval at re-promotion.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from taskmon import metrics
from taskmon.failover.share import fallback_share
from taskmon.failover.switch import Failover
from taskmon.memory import InMemorySemaphore
from taskmon.ports import (
    BackendUnavailable,
    Holder,
    HolderInfo,
    Lease,
    PermitTimeout,
    WaiterInfo,
    check_acquire,
)
from taskmon.redis.semaphore import RedisSemaphore

log = logging.getLogger(__name__)

# A degraded waiter looks at least this often whether Redis is back.
_LOCAL_SLICE_S = 0.5


@dataclass
class _Held:
    outer: Lease  # what the service holds
    redis: Lease | None  # the Redis grant behind it, if any
    local: Lease | None = None  # its grant (or adoption) by the local semaphore


@dataclass(frozen=True, slots=True)
class ShareInputs:
    """What the share is computed from, refreshed while Redis answers."""

    limit: int
    index: int
    workers: int

    @property
    def share(self) -> int:
        return fallback_share(self.limit, self.workers, self.index)


class FailoverSemaphore:
    """Semaphore: the Redis cap while it answers, this worker's share while it does not."""

    def __init__(
        self,
        primary: RedisSemaphore,
        failover: Failover,
        *,
        default_limit: int,
        share_inputs: Callable[[int], ShareInputs],
    ) -> None:
        """`share_inputs(limit)` reads the worker's index and the number of workers (from
        the registry, raising BackendUnavailable like every Redis read). While the Failover
        is settling after a re-promotion, nothing new is granted through Redis, so the
        workers that re-promote a little later have re-registered what they carried through
        the outage before it can be granted again (until every worker is back, at most the
        window's length)."""
        self.lease_ttl_s = primary.lease_ttl_s
        self._primary = primary
        self._failover = failover
        self._share_inputs = share_inputs
        self.inputs = share_inputs(default_limit)
        self._local = InMemorySemaphore(max(1, self.inputs.share), lease_ttl_s=self.lease_ttl_s)
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        failover.join(self)

    # -- the port --------------------------------------------------------------------------

    def acquire(self, holder: Holder, *, timeout: float, token: str | None = None) -> Lease:
        check_acquire(token, timeout)
        token = token or uuid.uuid4().hex
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            remaining = deadline - time.monotonic()
            settling = self._failover.settling()
            if not self._failover.degraded and settling > 0:
                if remaining <= 0:
                    raise PermitTimeout(f"no permit within {timeout:.3g} s (re-promoting)")
                self._failover.wait_settled(min(settling, remaining))  # may end early
                continue
            if not self._failover.degraded:
                try:
                    granted = self._primary.acquire(
                        holder, timeout=max(0.0, remaining), token=token
                    )
                except BackendUnavailable as exc:
                    self._failover.trip(exc)
                    continue
                with self._failover.lock:
                    if not self._failover.degraded:
                        return self._hand_out(token, holder, granted).outer
                # Tripped by another thread while Redis was granting (a blip, or only the
                # subscriber's connection broke): the grant would be over the share, or
                # against `reject`. Give it back and go on degraded.
                with contextlib.suppress(BackendUnavailable):
                    self._primary.release(granted)
                continue
            if remaining <= 0:
                raise PermitTimeout(f"no permit within {timeout:.3g} s (Redis away, degraded)")
            if self._failover.policy == "reject" or self.inputs.share == 0:
                self._failover.wait_promoted(min(remaining, _LOCAL_SLICE_S))
                continue
            try:
                local = self._local.acquire(holder, timeout=min(remaining, _LOCAL_SLICE_S),
                                            token=token)  # fmt: skip
            except PermitTimeout:
                continue
            with self._failover.lock:
                if not self._failover.degraded:  # back on Redis meanwhile: ask Redis instead
                    self._local.release(local)
                    continue
                held = self._hand_out(token, holder, None, fencing=local.fencing)
                held.local = local
                return held.outer

    def renew(self, lease: Lease) -> bool:
        held = self._find(lease)
        if held is None:
            return False
        if not self._failover.degraded and held.redis is not None:
            try:
                if self._primary.renew(held.redis):
                    return True
                # Gone from Redis: a lease that really ended, or a Redis that lost its data
                # (restarted empty) a moment ago, whose write-back re-registers it.
                lost_data = self._failover.recheck_store()
                if not self._failover.degraded:
                    return lost_data and held.redis is not None and self._primary.renew(held.redis)
                # Degraded meanwhile (the look itself failed): adopted, renewed below.
            except BackendUnavailable as exc:
                self._failover.trip(exc)  # adopts it: renewed below
        with self._failover.lock:
            if held.local is not None:
                return self._local.renew(held.local)
        return True  # re-promoted meanwhile: the reclaim just gave it a full lease

    def renew_all(self, leases: Sequence[Lease]) -> list[bool]:
        """Every Redis grant behind `leases` renewed in one call while Redis answers; the
        rest (local ones, a grant Redis did not renew, a batch that failed and tripped the
        failover) each go through `renew`, which knows what to do with them."""
        confirmed: set[int] = set()
        batch = [] if self._failover.degraded else [
            (index, held.redis) for index, held in enumerate(map(self._find, leases))
            if held is not None and held.redis is not None
        ]  # fmt: skip
        if batch:
            try:
                answers = self._primary.renew_all([grant for _, grant in batch])
            except BackendUnavailable as exc:
                self._failover.trip(exc)
            else:
                confirmed = {index for (index, _), ok in zip(batch, answers, strict=True) if ok}
        return [index in confirmed or self.renew(lease) for index, lease in enumerate(leases)]

    def release(self, lease: Lease) -> bool:
        # Under the Failover's lock: a switch adopts or re-registers what `_held` lists, so
        # it must see this permit either still held or gone from both sides.
        with self._failover.lock:
            with self._lock:
                held = self._held.get(lease.token)
                if held is None or held.outer is not lease:
                    return False
                del self._held[lease.token]
            if held.local is not None:
                self._local.release(held.local)
                held.local = None
            on_redis = held.redis if not self._failover.degraded else None
        if on_redis is not None:
            try:
                return self._primary.release(on_redis)
            except BackendUnavailable as exc:
                self._failover.trip(exc)  # the Redis permit ends with its lease
        return True

    def limit(self) -> int:
        if not self._failover.degraded:
            try:
                return self._primary.limit()
            except BackendUnavailable as exc:
                self._failover.trip(exc)
        return self.inputs.share

    def set_limit(self, limit: int) -> None:
        if self._failover.degraded:
            raise BackendUnavailable(
                "the global cap cannot change while Redis is away; retry once it is back"
            )
        self._primary.set_limit(limit)

    def in_use(self) -> int:
        if not self._failover.degraded:
            try:
                return self._primary.in_use()
            except BackendUnavailable as exc:
                self._failover.trip(exc)
        return self._local.in_use()

    def holders(self) -> list[HolderInfo]:
        if not self._failover.degraded:
            try:
                return self._primary.holders()
            except BackendUnavailable as exc:
                self._failover.trip(exc)
        return self._local.holders()

    def waiters(self) -> list[WaiterInfo]:
        if not self._failover.degraded:
            try:
                return self._primary.waiters()
            except BackendUnavailable as exc:
                self._failover.trip(exc)
        return self._local.waiters()

    def revoke(self, token: str) -> HolderInfo | None:
        """Redis's permit under `token` while Redis answers (BackendUnavailable when it does
        not: the caller retries); this worker's local one while degraded. Either way the
        holder's next renewal answers False, and its synthesis stops as on a lost lease."""
        if not self._failover.degraded:
            try:
                return self._primary.revoke(token)
            except BackendUnavailable as exc:
                self._failover.trip(exc)
                raise
        with self._failover.lock:
            return self._local.revoke(token)

    def close(self) -> None:
        self._local.close()
        self._primary.close()

    # -- the Failover's participant ----------------------------------------------------------

    def on_degrade(self) -> None:
        """Adopt every permit held, and take the share as the local limit."""
        self._local.set_limit(max(1, self.inputs.share))
        with self._lock:
            held = list(self._held.values())
        for entry in held:
            if entry.local is None:
                entry.local = self._local.adopt(entry.outer.holder, entry.outer.token)

    def write_back(self, *, store_lost: bool) -> int:
        return 0  # permits are re-registered under the lock, just before the flip

    def on_promote(self, *, store_lost: bool) -> int:
        """Re-register every permit still held in Redis, then let the local grants go."""
        if store_lost:
            self._primary.restore_limit()  # the last cap known, as whose it was
        with self._lock:
            held = list(self._held.values())
        for entry in held:
            entry.redis = self._primary.reclaim(entry.outer.holder, entry.outer.token)
            metrics.WRITTEN_BACK.labels("permit").inc()
        for entry in held:
            if entry.local is not None:
                self._local.release(entry.local)
                entry.local = None
        return len(held)

    def refresh(self) -> None:
        self.inputs = self._share_inputs(self._primary.limit())

    # -- internals -------------------------------------------------------------------------

    def _hand_out(
        self, token: str, holder: Holder, granted: Lease | None, fencing: int = 0
    ) -> _Held:
        if granted is not None:
            # The Redis grant's own lease and moment: a grant handed over to a waiter has a
            # shorter first lease, which the keeper must renew (and `expired_locally` judge) by.
            outer = Lease(token, granted.fencing, holder, granted.ttl_s, self, granted.granted_at)
        else:
            outer = Lease(token, fencing, holder, self.lease_ttl_s, self)
        held = _Held(outer, granted)
        with self._lock:
            self._held[token] = held
        return held

    def _find(self, lease: Lease) -> _Held | None:
        with self._lock:
            held = self._held.get(lease.token)
        return held if held is not None and held.outer is lease else None
