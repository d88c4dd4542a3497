"""LeaseKeeper: renews held leases in the background, drops the ones already lost."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence

import pytest
from prometheus_client import REGISTRY

from taskmon.memory import InMemorySemaphore
from taskmon.ports import (
    BackendUnavailable,
    Holder,
    HolderInfo,
    Lease,
    PermitTimeout,
    WaiterInfo,
)
from taskmon.service.lease_keeper import LeaseKeeper
from tests.support.timing import FakeClock, wait_for

TTL = 10.0


@pytest.fixture
def keeper() -> Iterator[LeaseKeeper]:
    keeper = LeaseKeeper(interval_s=0.01)
    yield keeper
    keeper.close()


def permits_lost() -> float:
    return REGISTRY.get_sample_value("taskmon_permits_lost_total") or 0.0


def test_keeps_a_lease_alive_past_its_ttl(keeper: LeaseKeeper) -> None:
    clock = FakeClock()
    sem = InMemorySemaphore(1, lease_ttl_s=TTL, clock=clock)
    lease = sem.acquire(Holder("w", "t"), timeout=0)
    with keeper.keep(lease) as kept:
        assert kept is lease
        assert keeper.held() == 1
        for _ in range(3):
            clock.advance(TTL * 0.6)
            wait_for(
                lambda: sem.holders()[0].expires_in_s == pytest.approx(TTL),
                message="the keeper to renew the lease",
            )
        # 1.8 TTLs after the grant, the permit is still held.
        assert sem.in_use() == 1
    assert keeper.held() == 0
    assert lease.release() is True


def test_a_lost_lease_is_dropped_and_counted(keeper: LeaseKeeper) -> None:
    clock = FakeClock()
    sem = InMemorySemaphore(1, lease_ttl_s=TTL, clock=clock)
    lease = sem.acquire(Holder("w", "t"), timeout=0)
    before = permits_lost()
    with keeper.keep(lease):
        clock.advance(TTL)  # the lease ends before any renewal (a stalled worker)
        wait_for(lambda: keeper.held() == 0, message="the keeper to drop the lost lease")
        assert permits_lost() == before + 1
    assert sem.in_use() == 0


class FlakySemaphore:
    """A Semaphore whose store is unreachable for the first `outages` renewals."""

    lease_ttl_s = TTL

    def __init__(self, outages: int) -> None:
        self.outages = outages
        self.renewals = 0
        self._lock = threading.Lock()

    def acquire(self, holder: Holder, *, timeout: float, token: str | None = None) -> Lease:
        return Lease(token or "tok", 1, holder, self.lease_ttl_s, self)

    def renew(self, lease: Lease) -> bool:
        with self._lock:
            self.renewals += 1
            if self.renewals <= self.outages:
                raise BackendUnavailable("store did not answer")
            return True

    def renew_all(self, leases: Sequence[Lease]) -> list[bool]:
        return [self.renew(lease) for lease in leases]

    def release(self, lease: Lease) -> bool:
        return True

    def limit(self) -> int:
        return 1

    def set_limit(self, limit: int) -> None:
        raise NotImplementedError

    def in_use(self) -> int:
        return 1

    def holders(self) -> list[HolderInfo]:
        return []

    def waiters(self) -> list[WaiterInfo]:
        return []

    def revoke(self, token: str) -> HolderInfo | None:
        return None

    def close(self) -> None:
        raise PermitTimeout("closed")


def test_an_outage_while_renewing_keeps_the_lease(keeper: LeaseKeeper) -> None:
    sem = FlakySemaphore(outages=3)
    lease = sem.acquire(Holder("w", "t"), timeout=0)
    before = permits_lost()
    with keeper.keep(lease):
        wait_for(lambda: sem.renewals >= 5, message="renewals after the outage")
        assert keeper.held() == 1, "an outage is retried, not taken as a lost permit"
    assert permits_lost() == before


def test_close_stops_renewing() -> None:
    keeper = LeaseKeeper(interval_s=0.01)
    sem = FlakySemaphore(outages=0)
    with keeper.keep(sem.acquire(Holder("w", "t"), timeout=0)):
        wait_for(lambda: sem.renewals >= 1, message="a first renewal")
        keeper.close()
        thread = keeper._thread
        assert thread is not None
        thread.join(10)
        assert not thread.is_alive()


def test_a_lost_lease_calls_its_holder_back(keeper: LeaseKeeper) -> None:
    clock = FakeClock()
    sem = InMemorySemaphore(1, lease_ttl_s=TTL, clock=clock)
    lease = sem.acquire(Holder("w", "t"), timeout=0)
    lost = threading.Event()
    with keeper.keep(lease, on_lost=lost.set):
        clock.advance(TTL)
        assert lost.wait(5), "on_lost was never called"
    kept = sem.acquire(Holder("w", "u"), timeout=0)
    called = threading.Event()
    with keeper.keep(kept, on_lost=called.set):
        clock.advance(TTL * 0.5)
        wait_for(lambda: sem.holders()[0].expires_in_s == pytest.approx(TTL), message="renewal")
    assert not called.is_set(), "a lease renewed in time is not lost"
    assert kept.release() is True


class StalledSemaphore(InMemorySemaphore):
    """The memory semaphore whose renewals hang until `unstall` is set (a stalled store)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.unstall = threading.Event()

    def renew_all(self, leases: Sequence[Lease]) -> list[bool]:
        self.unstall.wait(30)
        return super().renew_all(leases)


def test_a_lease_not_renewed_for_a_whole_ttl_has_expired_locally() -> None:
    keeper = LeaseKeeper(interval_s=60)
    sem = StalledSemaphore(1, lease_ttl_s=0.05)
    lease = sem.acquire(Holder("w", "t"), timeout=0)
    try:
        with keeper.keep(lease):
            assert not keeper.expired_locally(lease)
            wait_for(lambda: keeper.expired_locally(lease), message="a TTL without renewal")
        assert keeper.expired_locally(lease), "a lease it no longer keeps counts as expired"
    finally:
        sem.unstall.set()
        keeper.close()
        lease.release()


def test_a_short_first_lease_is_renewed_a_third_into_it_not_at_the_next_tick() -> None:
    keeper = LeaseKeeper(interval_s=60)  # a tick far away: only the lease's own TTL counts
    sem = BatchCounting(1, lease_ttl_s=30)
    granted = sem.acquire(Holder("w", "t"), timeout=0)
    short = Lease(granted.token, granted.fencing, granted.holder, 0.3, sem)  # handed over
    try:
        with keeper.keep(short):
            wait_for(lambda: sem.batches, timeout=2, message="a renewal within 0.1 s or so")
            assert not keeper.expired_locally(short)
            renewals = len(sem.batches)
            time.sleep(0.4)  # past the short TTL: renewed once, now on the full 30 s lease
            assert len(sem.batches) == renewals, "then the full lease's pace"
            assert not keeper.expired_locally(short), "renewed: the 30 s lease counts now"
    finally:
        keeper.close()
        granted.release()


class BatchCounting(InMemorySemaphore):
    """The memory semaphore, counting the keeper's calls and the leases in each."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.batches: list[int] = []

    def renew_all(self, leases: Sequence[Lease]) -> list[bool]:
        self.batches.append(len(leases))
        return super().renew_all(leases)


def test_one_call_per_semaphore_renews_all_its_leases(keeper: LeaseKeeper) -> None:
    first, second = BatchCounting(3, lease_ttl_s=TTL), BatchCounting(1, lease_ttl_s=TTL)
    leases = [first.acquire(Holder("w", f"t{n}"), timeout=0) for n in range(3)]
    other = second.acquire(Holder("w", "u"), timeout=0)
    with contextlib.ExitStack() as kept:
        for lease in [*leases, other]:
            kept.enter_context(keeper.keep(lease))
        wait_for(lambda: len(first.batches) >= 3 and len(second.batches) >= 3,
                 message="three ticks")  # fmt: skip
    assert set(first.batches[1:-1]) == {3}, "all three of its leases in one call per tick"
    assert set(second.batches[1:-1]) == {1}


class FailingShortLease(FlakySemaphore):
    """A store that never answers a renewal, for leases of 0.6 s."""

    lease_ttl_s = 0.6

    def __init__(self, error: Exception) -> None:
        super().__init__(outages=0)
        self.error = error

    def renew(self, lease: Lease) -> bool:
        with self._lock:
            self.renewals += 1
        raise self.error


@pytest.mark.parametrize(
    "error", [BackendUnavailable("store did not answer"), RuntimeError("NOPERM")]
)
def test_a_failing_renewal_is_retried_at_a_pace_never_in_a_busy_loop(error: Exception) -> None:
    keeper = LeaseKeeper(interval_s=60)  # only the lease's own TTL paces the keeper
    sem = FailingShortLease(error)
    lease = sem.acquire(Holder("w", "t"), timeout=0)
    try:
        with keeper.keep(lease):
            wait_for(lambda: sem.renewals >= 3, timeout=5, message="three tries")
            time.sleep(0.3)
            # A third into the 0.6 s lease, then every sixth of it: a handful of tries in
            # half a second; a loop that retried at once made hundreds of thousands.
            assert sem.renewals < 20
    finally:
        keeper.close()
