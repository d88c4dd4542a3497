"""InMemorySemaphore: owned, leased, fenced, FIFO permits with a live limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from functools import partial

import pytest

from taskmon.memory import InMemorySemaphore
from taskmon.ports import Holder, HolderInfo, Lease, PermitTimeout
from tests.unit._helpers import WAIT_S, FakeClock, run_threads, wait_for

TTL = 10.0
# Owner tokens chosen by the caller (the service uses task ids).
OWNER, OWNER_A, OWNER_B = "owner-1", "owner-a", "owner-b"


def holder(n: int | str = 0) -> Holder:
    return Holder(worker="w:1", task_id=f"task-{n}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sem(clock: FakeClock) -> Iterator[InMemorySemaphore]:
    semaphore = InMemorySemaphore(1, lease_ttl_s=TTL, clock=clock)
    yield semaphore
    semaphore.close()  # wakes any waiter a failed test left behind


def waiting(sem: InMemorySemaphore) -> int:
    """How many acquires are queued (white-box: the port has no public view of waiters)."""
    with sem._cond:
        return len(sem._queue)


class Waiter:
    """An acquire running in its own thread; its outcome is read once `done` is set."""

    def __init__(self, sem: InMemorySemaphore, h: Holder, timeout: float = WAIT_S) -> None:
        self.lease: Lease | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sem, h, timeout), daemon=True)
        self._thread.start()

    def _run(self, sem: InMemorySemaphore, h: Holder, timeout: float) -> None:
        try:
            self.lease = sem.acquire(h, timeout=timeout)
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def result(self) -> Lease:
        assert self.done.wait(WAIT_S), "the acquire did not return"
        self._thread.join(WAIT_S)
        if self.error is not None:
            raise self.error
        assert self.lease is not None
        return self.lease


def more_waiting_than(sem: InMemorySemaphore, count: int) -> bool:
    return waiting(sem) > count


def start_waiter(sem: InMemorySemaphore, h: Holder, timeout: float = WAIT_S) -> Waiter:
    """A waiter that is known to be queued when this returns."""
    before = waiting(sem)
    waiter = Waiter(sem, h, timeout)
    wait_for(lambda: waiting(sem) > before or waiter.done.is_set(), message="the waiter to queue")
    assert not waiter.done.is_set(), "expected the acquire to wait"
    return waiter


# --- basics -------------------------------------------------------------------------------------


def test_acquire_and_release(sem: InMemorySemaphore) -> None:
    lease = sem.acquire(holder(1), timeout=0)
    assert isinstance(lease, Lease)
    assert lease.holder == holder(1)
    assert lease.ttl_s == TTL
    assert lease.fencing >= 1
    assert sem.in_use() == 1
    assert sem.limit() == 1
    assert sem.lease_ttl_s == TTL
    assert lease.release() is True
    assert sem.in_use() == 0


def test_limit_is_respected(clock: FakeClock) -> None:
    sem = InMemorySemaphore(2, lease_ttl_s=TTL, clock=clock)
    first = sem.acquire(holder(1), timeout=0)
    sem.acquire(holder(2), timeout=0)
    with pytest.raises(PermitTimeout):
        sem.acquire(holder(3), timeout=0)
    with pytest.raises(PermitTimeout):
        sem.acquire(holder(3), timeout=0.05)
    assert sem.in_use() == 2
    assert waiting(sem) == 0, "a timed-out acquire leaves the queue"
    first.release()
    assert sem.acquire(holder(3), timeout=0).holder == holder(3)
    assert sem.in_use() == 2


def test_permit_timeout_is_a_timeout_error() -> None:
    assert issubclass(PermitTimeout, TimeoutError)


def test_a_limit_below_one_is_refused(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        InMemorySemaphore(0, lease_ttl_s=TTL, clock=clock)
    sem = InMemorySemaphore(1, lease_ttl_s=TTL, clock=clock)
    with pytest.raises(ValueError, match="at least 1"):
        sem.set_limit(0)
    assert sem.limit() == 1


def test_lease_is_a_context_manager(sem: InMemorySemaphore) -> None:
    with sem.acquire(holder(), timeout=0) as lease:
        assert sem.in_use() == 1
    assert sem.in_use() == 0
    assert lease.release() is False


def test_repeated_acquire_with_the_same_token_is_a_no_op(sem: InMemorySemaphore) -> None:
    first = sem.acquire(holder(1), timeout=0, token=OWNER)
    assert first.token == OWNER
    # The only permit is taken, yet the same owner gets it back at once, not a second one.
    again = sem.acquire(holder(1), timeout=0, token=OWNER)
    assert again.token == first.token
    assert again.fencing == first.fencing
    assert sem.in_use() == 1
    assert len(sem.holders()) == 1
    assert again.release() is True
    assert first.release() is False
    assert sem.in_use() == 0


def test_tokens_are_unique_by_default(clock: FakeClock) -> None:
    sem = InMemorySemaphore(5, lease_ttl_s=TTL, clock=clock)
    leases = [sem.acquire(holder(n), timeout=0) for n in range(5)]
    assert len({lease.token for lease in leases}) == 5


def test_fencing_strictly_increases(clock: FakeClock) -> None:
    sem = InMemorySemaphore(3, lease_ttl_s=TTL, clock=clock)
    fencings = []
    for n in range(10):
        lease = sem.acquire(holder(n), timeout=0)
        fencings.append(lease.fencing)
        if n % 2:
            lease.release()
        else:
            clock.advance(TTL)  # let it expire instead: the counter must not rewind
    assert fencings == sorted(set(fencings))
    assert len(fencings) == 10


def test_release_twice(sem: InMemorySemaphore) -> None:
    first = sem.acquire(holder(1), timeout=0)
    assert first.release() is True
    second = sem.acquire(holder(2), timeout=0)
    assert first.release() is False, "a second release reports False"
    assert sem.in_use() == 1, "and does not free someone else's permit"
    assert sem.holders()[0].holder == holder(2)
    assert second.release() is True


def test_holders_details(clock: FakeClock) -> None:
    sem = InMemorySemaphore(2, lease_ttl_s=TTL, clock=clock)
    a = sem.acquire(Holder("host:1", "a" * 32), timeout=0, token=OWNER_A)
    clock.advance(4)
    b = sem.acquire(Holder("host:2", "b" * 32), timeout=0, token=OWNER_B)
    infos = {info.token: info for info in sem.holders()}
    assert set(infos) == {OWNER_A, OWNER_B}
    assert all(isinstance(info, HolderInfo) for info in infos.values())
    assert infos[OWNER_A].holder == Holder("host:1", "a" * 32)
    assert infos[OWNER_A].fencing == a.fencing
    assert infos[OWNER_A].expires_in_s == pytest.approx(TTL - 4)
    assert infos[OWNER_B].holder == Holder("host:2", "b" * 32)
    assert infos[OWNER_B].fencing == b.fencing
    assert infos[OWNER_B].expires_in_s == pytest.approx(TTL)
    a.release()
    assert [info.token for info in sem.holders()] == [OWNER_B]


# --- leases -------------------------------------------------------------------------------------


def test_renew_extends_the_lease(sem: InMemorySemaphore, clock: FakeClock) -> None:
    lease = sem.acquire(holder(), timeout=0)
    clock.advance(8)
    assert lease.renew() is True
    assert sem.holders()[0].expires_in_s == pytest.approx(TTL)
    clock.advance(8)  # 16 s after the grant: past the first lease, within the renewed one
    assert sem.in_use() == 1
    assert sem.holders()[0].expires_in_s == pytest.approx(2)
    clock.advance(2)
    assert sem.in_use() == 0
    assert lease.renew() is False
    assert lease.release() is False


def test_lease_expiry_frees_the_permit(sem: InMemorySemaphore, clock: FakeClock) -> None:
    stalled = sem.acquire(holder("stalled"), timeout=0)
    clock.advance(TTL - 0.001)
    with pytest.raises(PermitTimeout):
        sem.acquire(holder("next"), timeout=0)
    clock.advance(0.001)
    successor = sem.acquire(holder("next"), timeout=0)
    assert successor.fencing > stalled.fencing
    assert stalled.release() is False, "a release after the lease ended is not counted"
    assert stalled.renew() is False
    assert sem.in_use() == 1
    assert sem.holders()[0].holder == holder("next")
    assert successor.release() is True


def test_lease_expiry_wakes_a_waiter(sem: InMemorySemaphore, clock: FakeClock) -> None:
    sem.acquire(holder("dead"), timeout=0)
    waiter = start_waiter(sem, holder("waiter"))
    clock.advance(TTL)  # nobody releases: the waiter notices on its own
    assert waiter.result().holder == holder("waiter")
    assert sem.in_use() == 1


def test_stale_lease_cannot_release_a_later_grant_of_its_token(
    sem: InMemorySemaphore, clock: FakeClock
) -> None:
    # The same owner token acquires again after its lease ended (e.g. a retried task run):
    # the old Lease object must not be able to release or renew the new grant.
    old = sem.acquire(holder(), timeout=0, token=OWNER)
    clock.advance(TTL)
    new = sem.acquire(holder(), timeout=0, token=OWNER)
    assert new.fencing > old.fencing
    assert old.release() is False, "a release after the lease ended must report False"
    assert sem.in_use() == 1, "and must leave the newer grant in place"
    assert new.release() is True


# --- FIFO and the live limit --------------------------------------------------------------------


def test_waiters_get_permits_in_arrival_order(sem: InMemorySemaphore) -> None:
    blocker = sem.acquire(holder("blocker"), timeout=0)
    order: list[int] = []
    released = []

    def take(n: int) -> None:
        lease = sem.acquire(holder(n), timeout=WAIT_S)
        order.append(n)
        released.append(lease.release())

    threads = []
    for n in range(8):
        before = waiting(sem)
        thread = threading.Thread(target=take, args=(n,), daemon=True)
        thread.start()
        threads.append(thread)
        wait_for(partial(more_waiting_than, sem, before), message=f"waiter {n} to queue")
    blocker.release()
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(t.is_alive() for t in threads)
    assert order == list(range(8))
    assert released == [True] * 8
    assert sem.in_use() == 0


def test_a_newcomer_does_not_overtake_a_waiter(sem: InMemorySemaphore) -> None:
    blocker = sem.acquire(holder("blocker"), timeout=0)
    waiter = start_waiter(sem, holder("first"))
    blocker.release()
    first = waiter.result()
    assert first.holder == holder("first")
    with pytest.raises(PermitTimeout):
        sem.acquire(holder("late"), timeout=0)


def test_a_timed_out_waiter_does_not_block_the_queue(sem: InMemorySemaphore) -> None:
    blocker = sem.acquire(holder("blocker"), timeout=0)
    impatient = start_waiter(sem, holder("impatient"), timeout=0.05)
    patient = start_waiter(sem, holder("patient"))
    with pytest.raises(PermitTimeout):
        impatient.result()
    blocker.release()
    assert patient.result().holder == holder("patient")


def test_raising_the_limit_wakes_waiters(sem: InMemorySemaphore) -> None:
    sem.acquire(holder("blocker"), timeout=0)
    waiters = [start_waiter(sem, holder(n)) for n in range(2)]
    sem.set_limit(3)
    assert sem.limit() == 3
    assert {w.result().holder for w in waiters} == {holder(0), holder(1)}
    assert sem.in_use() == 3


def test_lowering_the_limit_keeps_holders(clock: FakeClock) -> None:
    sem = InMemorySemaphore(3, lease_ttl_s=TTL, clock=clock)
    leases = [sem.acquire(holder(n), timeout=0) for n in range(3)]
    sem.set_limit(1)
    assert sem.limit() == 1
    assert sem.in_use() == 3, "holders over a lowered cap keep their permits"
    assert all(lease.renew() for lease in leases)
    leases[0].release()
    leases[1].release()
    with pytest.raises(PermitTimeout):
        sem.acquire(holder("new"), timeout=0)
    leases[2].release()
    assert sem.acquire(holder("new"), timeout=0).holder == holder("new")


# --- close --------------------------------------------------------------------------------------


def test_close_wakes_waiters_with_permit_timeout(sem: InMemorySemaphore) -> None:
    held = sem.acquire(holder("held"), timeout=0)
    waiters = [start_waiter(sem, holder(n), timeout=60) for n in range(3)]
    sem.close()
    for waiter in waiters:
        with pytest.raises(PermitTimeout, match="closed"):
            waiter.result()
    assert waiting(sem) == 0
    assert sem.in_use() == 1, "held permits stay"
    assert held.release() is True
    with pytest.raises(PermitTimeout):
        sem.acquire(holder("after"), timeout=60)  # at once, though a permit is free
    assert sem.in_use() == 0


# --- stress -------------------------------------------------------------------------------------


def test_many_threads_never_exceed_the_limit() -> None:
    limit, threads, rounds = 3, 16, 60
    sem = InMemorySemaphore(limit, lease_ttl_s=600)
    lock = threading.Lock()
    state = {"current": 0, "max": 0}
    fencings: list[int] = []

    def worker(n: int) -> None:
        for r in range(rounds):
            lease = sem.acquire(holder(f"{n}-{r}"), timeout=WAIT_S)
            with lock:
                state["current"] += 1
                state["max"] = max(state["max"], state["current"])
                fencings.append(lease.fencing)
            assert sem.in_use() <= limit
            time.sleep(0)  # hand the GIL over while holding the permit, so holders overlap
            with lock:
                state["current"] -= 1
            assert lease.release() is True

    run_threads([partial(worker, n) for n in range(threads)], timeout=60)
    assert 1 <= state["max"] <= limit
    assert state["current"] == 0
    assert sem.in_use() == 0
    assert len(set(fencings)) == threads * rounds, "every grant has its own fencing token"
    assert waiting(sem) == 0
