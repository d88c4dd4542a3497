"""The semaphore's hand-over, on a real Redis: the permit freed goes to the head of the queue
inside the script that frees it, never to a newcomer or a waiter behind; a waiter gives back
only the grant made to its own wait; an announcement is never taken by another wait, nor lost
when it comes before its wait registers; an older version's counter and cap carry over."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import redis

from taskmon.harness.redis_server import RedisServer
from taskmon.ports import PermitTimeout
from taskmon.redis.keys import Keys
from taskmon.redis.semaphore import RedisSemaphore
from tests.support.redis_wiring import wire_semaphore
from tests.support.semaphores import Waiter, holder, take
from tests.support.timing import WAIT_S, wait_for

pytestmark = pytest.mark.redis

MakeSemaphore = Callable[..., RedisSemaphore]


@pytest.fixture
def make_semaphore(redis_server: RedisServer, keys: Keys) -> Iterator[MakeSemaphore]:
    """Semaphores on one namespace, each with its own client and subscriber (a worker)."""
    with contextlib.ExitStack() as opened:

        def make(*, limit: int = 1, ttl: float = 10.0, retry_s: float = 5.0) -> RedisSemaphore:
            wiring = wire_semaphore(redis_server.url, keys, limit=limit, ttl_s=ttl,
                                    retry_interval_s=retry_s)  # fmt: skip
            opened.callback(wiring.close)
            return wiring.semaphore

        yield make


def holders(client: redis.Redis, keys: Keys) -> list[str]:
    return [str(token) for token in client.zrange(keys.sem_holders, 0, -1)]


def ended_unseen(sem: RedisSemaphore) -> None:
    """Wait until every lease has ended by Redis time, with no script run to notice."""
    wait_for(lambda: sem.in_use() == 0, timeout=WAIT_S, message="the leases to end")


def test_a_newcomer_never_takes_a_permit_that_ended_while_someone_waits(
    make_semaphore: MakeSemaphore, redis_client: redis.Redis, keys: Keys
) -> None:
    sem = make_semaphore(ttl=0.2)
    take(sem, "h")
    assert not sem.do_acquire("A", holder("A")).granted
    ended_unseen(sem)  # h's permit is free, and A is first in line
    assert not sem.do_acquire("N", holder("N")).granted, "the newcomer overtook A"
    assert holders(redis_client, keys) == ["A"], "granted to A by the newcomer's call"


def test_a_waiter_behind_the_head_is_not_granted_when_it_calls_first(
    make_semaphore: MakeSemaphore, redis_client: redis.Redis, keys: Keys
) -> None:
    sem = make_semaphore(ttl=0.2)
    take(sem, "h")
    assert not sem.do_acquire("A", holder("A")).granted
    assert not sem.do_acquire("B", holder("B")).granted
    ended_unseen(sem)
    assert not sem.do_acquire("B", holder("B")).granted, "B overtook A"
    assert holders(redis_client, keys) == ["A"]


def test_a_wait_that_gives_up_returns_only_the_grant_made_to_it(
    make_semaphore: MakeSemaphore, redis_client: redis.Redis, keys: Keys
) -> None:
    first, second = make_semaphore(), make_semaphore()
    blocker = take(first, "x")
    assert not first.do_acquire("T", holder("T"), "1").granted
    assert blocker.release()  # T granted to first's wait "1", announced to nobody
    assert first.do_leave("T", "1") == 2, "its own grant, given back"
    assert holders(redis_client, keys) == []

    blocker = take(first, "x")
    assert not first.do_acquire("T", holder("T"), "2").granted
    assert not second.do_acquire("T", holder("T"), "1").granted  # the same token, elsewhere
    assert blocker.release()  # granted to the wait that queued it last: second's
    assert first.do_leave("T", "2") == 0, "another wait's grant is not this one's to return"
    again = second.do_acquire("T", holder("T"), "1")
    assert again.granted, "second's permit survived first giving up"
    assert second.do_release("T", again.fencing)


def test_an_announcement_goes_to_its_own_wait_only_and_waits_for_it_to_register(
    make_semaphore: MakeSemaphore,
) -> None:
    inbox = make_semaphore()._inbox  # white-box: what the subscriber thread calls
    wait = inbox.wait_for("T", "5")
    inbox._on_grant(f"{inbox.inbox}\tT\t7\t1000\t4")
    assert wait.grant is None, "an earlier wait's announcement"
    inbox._on_grant("another\tT\t8\t1000\t5")
    assert wait.grant is None, "another process's"
    inbox._on_grant(f"{inbox.inbox}\tT\t9\t1000\t5")
    assert wait.grant == (9, 1.0)
    inbox.forget("T", wait)

    inbox._on_grant(f"{inbox.inbox}\tU\t10\t2000\t6")  # before its wait registers
    early = inbox.wait_for("U", "6")
    assert early.event.is_set()
    assert early.grant == (10, 2.0)
    inbox.forget("U", early)


def test_a_handed_over_grant_reaches_its_waiter_with_its_short_first_lease(
    make_semaphore: MakeSemaphore,
) -> None:
    holder_side, waiter_side = make_semaphore(), make_semaphore(retry_s=1.0)
    blocker = take(holder_side, "x")
    waiter = Waiter(waiter_side, "w", timeout=WAIT_S)
    wait_for(lambda: waiter_side._inbox._waits, message="w queued")
    assert blocker.release()
    lease = waiter.result()
    assert lease.ttl_s == pytest.approx(waiter_side.grant_ttl_s)
    assert lease.ttl_s == 5.0, "half the 10 s lease (above the waiter's 3 s window)"
    assert lease.renew(), "the first renewal gives it the full lease"
    assert lease.release()


def test_an_older_versions_fencing_counter_and_operator_cap_carry_over(
    make_semaphore: MakeSemaphore, redis_client: redis.Redis, keys: Keys
) -> None:
    redis_client.set(keys.sem_legacy_fencing, 500)
    redis_client.set(keys.sem_legacy_limit, 2)
    sem = make_semaphore(limit=4)
    assert sem.configure_limit() == 2, "the operator's cap, not this worker's default"
    leases = [take(sem, "a"), take(sem, "b")]
    assert [lease.fencing for lease in leases] == [501, 502], "fencing keeps growing"
    with pytest.raises(PermitTimeout):
        take(sem, "c")
    assert make_semaphore(limit=5).configure_limit() == 2, "kept as an operator's"
    assert all(lease.release() for lease in leases)
