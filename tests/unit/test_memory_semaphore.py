"""What only the memory semaphore has: a settable clock, so lease ends are exact instants.

The Semaphore contract both adapters share is tests/contract/test_semaphore.py; the state
machine of tests/stateful/ runs on both as well.
"""

from __future__ import annotations

import pytest

from taskmon.memory import InMemorySemaphore
from taskmon.ports import Holder, PermitTimeout
from tests.support.semaphores import MemoryRig, Waiter, holder, take
from tests.support.timing import FakeClock

TTL = 10.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sem(clock: FakeClock) -> InMemorySemaphore:
    return InMemorySemaphore(1, lease_ttl_s=TTL, clock=clock)


def test_a_lease_ends_exactly_at_its_ttl(sem: InMemorySemaphore, clock: FakeClock) -> None:
    stalled = take(sem, "stalled")
    clock.advance(TTL - 0.001)
    with pytest.raises(PermitTimeout):
        take(sem, "next")
    assert sem.in_use() == 1
    clock.advance(0.001)
    assert sem.in_use() == 0
    assert take(sem, "next").fencing > stalled.fencing


def test_a_renewal_restarts_the_lease_from_now(sem: InMemorySemaphore, clock: FakeClock) -> None:
    lease = take(sem, "a")
    clock.advance(8)
    assert lease.renew() is True
    assert sem.holders()[0].expires_in_s == pytest.approx(TTL)
    clock.advance(8)  # 16 s after the grant: past the first lease, within the renewed one
    assert sem.in_use() == 1
    assert sem.holders()[0].expires_in_s == pytest.approx(2)
    clock.advance(2)
    assert sem.in_use() == 0
    assert lease.renew() is False


def test_holders_show_the_time_left_on_each_lease(clock: FakeClock) -> None:
    sem = InMemorySemaphore(2, lease_ttl_s=TTL, clock=clock)
    take(sem, "a", Holder("host:1", "a" * 32))
    clock.advance(4)
    take(sem, "b", holder("b"))
    left = {info.token: info.expires_in_s for info in sem.holders()}
    assert left == {"a": pytest.approx(TTL - 4), "b": pytest.approx(TTL)}


def test_a_zero_timeout_tries_once_and_never_waits(sem: InMemorySemaphore) -> None:
    # Structural, not timed: an acquire that waits lets go of the lock and shows in the queue
    # while it does; one that only tries holds the lock from its check to its PermitTimeout.
    take(sem, "held")
    rig = MemoryRig()
    impatient = Waiter(sem, "impatient", timeout=0)
    seen_waiting = False
    while not impatient.done.wait(0.001):
        seen_waiting = seen_waiting or "impatient" in rig.queued(sem)
    with pytest.raises(PermitTimeout):
        impatient.result()
    assert not seen_waiting
    assert rig.queued(sem) == []
