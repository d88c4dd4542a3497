"""The Semaphore port's contract, run against both adapters (memory and Redis).

What one adapter promises, the other must too: the service relies on the port, not on an
adapter. Each adapter's own file tests what only it has (exact expiry instants on a fake clock
in memory; scripts, wake-ups, dead waiters and outages in Redis). The Hypothesis machine in
tests/stateful/ explores sequences of the same calls on both.
"""

from __future__ import annotations

import math
import threading
import time

import pytest

from taskmon.ports import Holder, HolderInfo, Lease, PermitTimeout
from tests.support.semaphores import SemaphoreRig, holder, start_waiter, take
from tests.support.timing import WAIT_S


def test_permit_timeout_is_a_timeout_error() -> None:
    assert issubclass(PermitTimeout, TimeoutError)


# --- granting ------------------------------------------------------------------------------------


def test_acquire_and_release(rig: SemaphoreRig) -> None:
    sem = rig.make(limit=1, ttl_s=30.0)
    lease = take(sem, "a", holder(1))
    assert isinstance(lease, Lease)
    assert (lease.token, lease.holder, lease.ttl_s) == ("a", holder(1), 30.0)
    assert lease.fencing >= 1
    assert (sem.in_use(), sem.limit(), sem.lease_ttl_s) == (1, 1, 30.0)
    assert lease.release() is True
    assert sem.in_use() == 0


def test_grants_up_to_the_limit_and_a_timed_out_acquire_leaves_the_queue(
    rig: SemaphoreRig,
) -> None:
    sem = rig.make(limit=2)
    first, _ = take(sem, "t1"), take(sem, "t2")
    with pytest.raises(PermitTimeout):
        take(sem, "t3")  # a zero timeout tries once
    started = time.monotonic()
    with pytest.raises(PermitTimeout):
        take(sem, "t4", timeout=0.2)
    waited = time.monotonic() - started
    # It waits its whole timeout, and then gives up rather than hang (a liveness bound, with a
    # wide margin for a busy machine).
    assert 0.2 <= waited < 0.2 + WAIT_S / 2
    assert sem.in_use() == 2
    assert rig.queued(sem) == [], "an acquire that gave up left the queue"
    assert first.release() is True
    assert take(sem, "t3").holder == holder("t3")
    assert sem.in_use() == 2


def test_a_timed_out_acquire_says_how_long_it_waited(rig: SemaphoreRig) -> None:
    # The service records this message as the task's error (permit_timeout) for the client.
    sem = rig.make(limit=1)
    take(sem, "held")
    with pytest.raises(PermitTimeout, match=r"^no permit within 0\.05 s"):
        take(sem, "late", timeout=0.05)


def test_the_lease_is_a_context_manager(rig: SemaphoreRig) -> None:
    sem = rig.make()
    with take(sem, "a") as lease:
        assert sem.in_use() == 1
    assert sem.in_use() == 0
    assert lease.release() is False


def test_tokens_are_unique_when_the_caller_names_none(rig: SemaphoreRig) -> None:
    sem = rig.make(limit=5)
    leases = [sem.acquire(holder(n), timeout=0) for n in range(5)]
    assert len({lease.token for lease in leases}) == 5
    assert all(lease.release() for lease in leases)


@pytest.mark.parametrize(("token", "timeout"), [("", 0.0), ("a", math.nan)])
def test_an_empty_token_or_a_nan_timeout_is_refused(
    rig: SemaphoreRig, token: str, timeout: float
) -> None:
    sem = rig.make()
    with pytest.raises(ValueError, match=r"token|timeout"):
        sem.acquire(holder(), timeout=timeout, token=token)
    assert sem.in_use() == 0
    assert rig.queued(sem) == []


def test_a_repeated_acquire_with_a_held_token_returns_that_permit(rig: SemaphoreRig) -> None:
    sem = rig.make(limit=1)
    lease = take(sem, "a", holder("a"))
    # The cap is full, yet the same owner gets its own permit back at once, not a second one,
    # and it keeps the holder it was granted with.
    again = take(sem, "a", Holder("w:2", "retried"))
    assert (again.token, again.fencing, again.holder) == (lease.token, lease.fencing, lease.holder)
    assert sem.in_use() == 1
    assert [h.token for h in sem.holders()] == ["a"]
    assert again.release() is True
    assert lease.release() is False, "one permit, released once"
    assert sem.in_use() == 0


def test_fencing_strictly_increases_through_releases_and_expiries(rig: SemaphoreRig) -> None:
    sem = rig.make(limit=2, ttl_s=rig.short_ttl_s)
    fencings = []
    for n, token in enumerate(["a", "b", "a", "c", "b", "a"]):
        lease = take(sem, token)
        fencings.append(lease.fencing)
        if n % 2:
            assert lease.release() is True
        else:
            rig.let_leases_end(sem)  # the counter must not rewind when a lease just ends
    assert fencings == sorted(set(fencings))
    assert len(fencings) == 6


# --- releasing and renewing ----------------------------------------------------------------------


def test_a_second_release_is_false_and_frees_nobody_else(rig: SemaphoreRig) -> None:
    sem = rig.make(limit=1)
    first = take(sem, "a")
    assert first.release() is True
    second = take(sem, "b")
    assert first.release() is False
    assert sem.in_use() == 1
    assert [h.holder for h in sem.holders()] == [holder("b")]
    assert second.release() is True


def test_a_lease_that_ended_cannot_release_the_next_grant_of_its_token(rig: SemaphoreRig) -> None:
    # A retried task run takes the same owner token again after its first lease ended: the old
    # Lease object must not release or renew the new grant.
    sem = rig.make(limit=1, ttl_s=rig.short_ttl_s)
    old = take(sem, "a")
    rig.let_leases_end(sem)
    new = take(sem, "a")
    assert new.fencing > old.fencing
    assert old.release() is False
    assert old.renew() is False
    assert sem.in_use() == 1, "the newer grant stays"
    assert new.release() is True


def test_an_old_lease_cannot_release_or_renew_a_later_grant_of_its_token(
    rig: SemaphoreRig,
) -> None:
    sem = rig.make(limit=1)
    old = take(sem, "a")
    assert old.release() is True
    new = take(sem, "a")  # the same owner token, granted again (a retried task run)
    assert new.fencing > old.fencing
    assert old.release() is False
    assert old.renew() is False
    assert sem.in_use() == 1
    assert new.renew() is True
    assert new.release() is True
    assert sem.in_use() == 0


def test_renewing_keeps_the_permit_past_its_first_lease(rig: SemaphoreRig) -> None:
    sem = rig.make(limit=1, ttl_s=rig.short_ttl_s)
    ttl = sem.lease_ttl_s
    lease = take(sem, "a")
    for _ in range(3):  # 1.5 TTL in all: the first lease ended half a TTL ago
        rig.pass_time(ttl / 2)
        assert lease.renew() is True
    (info,) = sem.holders()
    assert ttl / 2 < info.expires_in_s <= ttl, "a renewal grants a whole TTL from now"
    assert sem.in_use() == 1
    with pytest.raises(PermitTimeout):
        take(sem, "b")
    rig.let_leases_end(sem)
    assert sem.in_use() == 0
    assert lease.renew() is False, "an ended lease is not revived"
    assert lease.release() is False


def test_an_ended_lease_frees_its_permit_and_its_release_is_not_counted(
    rig: SemaphoreRig,
) -> None:
    sem = rig.make(limit=1, ttl_s=rig.short_ttl_s)
    stalled = take(sem, "stalled")
    rig.let_leases_end(sem)
    assert sem.in_use() == 0
    successor = take(sem, "next")
    assert successor.fencing > stalled.fencing
    assert stalled.release() is False, "a release after the lease ended reports False"
    assert stalled.renew() is False
    assert sem.in_use() == 1
    assert [h.holder for h in sem.holders()] == [holder("next")]
    assert successor.release() is True


def test_an_ended_lease_lets_a_waiter_in_without_any_release(rig: SemaphoreRig) -> None:
    sem = rig.make(limit=1, ttl_s=rig.short_ttl_s)
    take(sem, "dead")
    waiter = start_waiter(rig, sem, "waiter")
    rig.let_leases_end(sem)  # nobody releases: the waiter notices on its own
    assert waiter.result().holder == holder("waiter")
    assert sem.in_use() == 1


def test_holders_say_who_holds_what_in_grant_order(rig: SemaphoreRig) -> None:
    sem = rig.make(limit=2, ttl_s=30.0)
    first = take(sem, "t1", Holder("host:1", "a" * 32))
    second = take(sem, "t2", Holder("host:2", "b" * 32))
    infos = sem.holders()
    assert all(isinstance(info, HolderInfo) for info in infos)
    assert [(h.holder, h.token, h.fencing) for h in infos] == [
        (Holder("host:1", "a" * 32), "t1", first.fencing),
        (Holder("host:2", "b" * 32), "t2", second.fencing),
    ]
    # Seconds, a whole lease each (the margin is for a busy machine, not for the arithmetic).
    assert all(25.0 < h.expires_in_s <= 30.0 for h in infos)
    assert first.release() is True
    assert [h.token for h in sem.holders()] == ["t2"]
    assert second.release() is True
    assert sem.holders() == []


# --- many workers, one queue ---------------------------------------------------------------------


def test_two_workers_share_one_cap(rig: SemaphoreRig) -> None:
    a = rig.make(limit=2)
    b = rig.peer(a)
    la, lb = take(a, "a", holder("a", "w:a")), take(b, "b", holder("b", "w:b"))
    for sem in (a, b):
        assert sem.in_use() == 2
        with pytest.raises(PermitTimeout):
            take(sem, "c")
    assert {h.holder.worker for h in a.holders()} == {"w:a", "w:b"}
    b.set_limit(3)
    assert a.limit() == 3
    lc = take(a, "c")
    for sem, lease in ((b, lc), (a, lb), (b, la)):  # any worker may release any permit
        assert sem.release(lease) is True
    assert a.in_use() == 0


def test_waiters_get_permits_in_arrival_order(rig: SemaphoreRig) -> None:
    a = rig.make(limit=1)
    b = rig.peer(a)
    blocker = take(a, "blocker")
    order: list[str] = []
    lock = threading.Lock()

    def record_then_release(lease: Lease) -> None:
        # In the granted thread, while it holds the only permit: the order is the grant order.
        with lock:
            order.append(lease.token)
        lease.release()

    waiters = [  # alternating between the two workers
        start_waiter(rig, (a, b)[n % 2], f"w{n}", on_grant=record_then_release) for n in range(6)
    ]
    assert rig.queued(a) == [f"w{n}" for n in range(6)]
    assert blocker.release() is True
    for waiter in waiters:
        waiter.result()
    assert order == [f"w{n}" for n in range(6)]
    assert a.in_use() == 0


def test_a_newcomer_does_not_overtake_a_waiter(rig: SemaphoreRig) -> None:
    sem = rig.make(limit=1)
    blocker = take(sem, "blocker")
    waiter = start_waiter(rig, sem, "first")
    assert blocker.release() is True
    assert waiter.result().holder == holder("first")
    with pytest.raises(PermitTimeout):
        take(sem, "late")


def test_a_waiter_that_gives_up_does_not_block_the_queue(rig: SemaphoreRig) -> None:
    sem = rig.make(limit=1)
    blocker = take(sem, "blocker")
    impatient = start_waiter(rig, sem, "impatient", timeout=1.0)
    patient = start_waiter(rig, sem, "patient")
    with pytest.raises(PermitTimeout):
        impatient.result()
    assert rig.queued(sem) == ["patient"]
    assert blocker.release() is True
    assert patient.result().holder == holder("patient")


# --- the live limit ------------------------------------------------------------------------------


def test_raising_the_limit_lets_waiters_in(rig: SemaphoreRig) -> None:
    sem = rig.make(limit=1)
    other = rig.peer(sem)
    take(sem, "blocker")
    waiters = [start_waiter(rig, sem, f"w{n}") for n in range(2)]
    other.set_limit(3)
    assert sem.limit() == 3
    assert {w.result().holder for w in waiters} == {holder("w0"), holder("w1")}
    assert sem.in_use() == 3


def test_lowering_the_limit_keeps_current_holders(rig: SemaphoreRig) -> None:
    sem = rig.make(limit=3)
    leases = [take(sem, t) for t in ("a", "b", "c")]
    sem.set_limit(1)
    assert sem.limit() == 1
    assert sem.in_use() == 3, "holders over a lowered cap keep their permits"
    assert all(lease.renew() for lease in leases)
    assert leases[0].release() is True
    assert leases[1].release() is True
    with pytest.raises(PermitTimeout):  # one holder left: already at the new cap
        take(sem, "d")
    assert leases[2].release() is True
    assert take(sem, "d").release() is True


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_a_limit_that_is_not_a_whole_number_of_at_least_one_is_refused(
    rig: SemaphoreRig, bad: object
) -> None:
    sem = rig.make(limit=1)
    with pytest.raises(ValueError, match="at least 1"):
        sem.set_limit(bad)  # type: ignore[arg-type]
    assert sem.limit() == 1
    with pytest.raises(ValueError, match="at least 1"):
        rig.make(limit=bad)  # type: ignore[arg-type]


# --- closing -------------------------------------------------------------------------------------


def test_close_wakes_waiters_with_permit_timeout_and_keeps_held_permits(
    rig: SemaphoreRig,
) -> None:
    sem = rig.make(limit=1)
    other = rig.peer(sem)
    held = take(other, "held")
    waiters = [start_waiter(rig, sem, f"w{n}", timeout=60) for n in range(3)]
    sem.close()
    for waiter in waiters:
        with pytest.raises(PermitTimeout, match="closed"):
            waiter.result()
    assert rig.queued(sem) == [], "every waiter left the queue"
    assert other.in_use() == 1, "held permits stay"
    assert held.release() is True
    with pytest.raises(PermitTimeout, match="closed"):
        take(sem, "after", timeout=60)  # at once, though a permit is free now
    sem.close()  # idempotent


def test_a_closed_semaphore_gives_no_permit_back_even_to_its_holder(rig: SemaphoreRig) -> None:
    # A repeated acquire normally returns a held permit; once closed, nothing is acquired.
    sem = rig.make(limit=1)
    lease = take(sem, "a")
    sem.close()
    with pytest.raises(PermitTimeout, match="closed"):
        take(sem, "a")
    assert lease.release() is True


def test_a_closed_semaphore_still_answers_reads(rig: SemaphoreRig) -> None:
    sem = rig.make(limit=2)
    lease = take(sem, "a")
    sem.close()
    assert (sem.limit(), sem.in_use()) == (2, 1)
    assert [h.token for h in sem.holders()] == ["a"]
    assert lease.renew() is True
    assert lease.release() is True
