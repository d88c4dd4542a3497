"""What only the Redis semaphore has: its scripts, wake-ups across workers, dead waiters,
and a Redis that hangs or answers late.

The Semaphore contract both adapters share is tests/contract/test_semaphore.py; the header of
every script is checked by tests/unit/test_lua_scripts.py.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from taskmon.harness.redis_server import RedisServer
from taskmon.ports import BackendUnavailable, Holder, Lease, PermitTimeout
from taskmon.redis.keys import Keys
from taskmon.redis.semaphore import Attempt, RedisSemaphore
from tests.support.redis_wiring import SemaphoreWiring, wire_semaphore
from tests.support.semaphores import holder, take
from tests.support.timing import WAIT_S

pytestmark = pytest.mark.redis

TTL = 10.0  # long enough that no lease ends during a test unless the test means it to
HANDOFF_S = 2.0  # a wake-up must beat the 5 s retry interval by far


class ObservedSemaphore(RedisSemaphore):
    """A RedisSemaphore that signals each run of the acquire script, so tests wait on events."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._events_lock = threading.Lock()
        self._attempted: defaultdict[str, threading.Event] = defaultdict(threading.Event)
        super().__init__(*args, **kwargs)

    def attempted(self, token: str) -> threading.Event:
        with self._events_lock:
            return self._attempted[token]

    def do_acquire(self, token: str, holder: Holder, nonce: str = "0") -> Attempt:
        attempt = super().do_acquire(token, holder, nonce)
        self.attempted(token).set()
        return attempt


MakeSemaphore = Callable[..., ObservedSemaphore]


@pytest.fixture
def make_semaphore(redis_server: RedisServer, keys: Keys) -> Iterator[MakeSemaphore]:
    """One simulated worker per call on the test's namespace: its own client, subscriber and
    (observed) semaphore; `server` puts it on another Redis, `client_options` tune its client."""
    opened: list[SemaphoreWiring] = []

    def make(
        *,
        limit: int = 1,
        ttl: float = TTL,
        retry_s: float = 1.0,
        server: RedisServer | None = None,
        confirm_timeout_s: float = 2.0,
        **client_options: Any,
    ) -> ObservedSemaphore:
        wiring = wire_semaphore(
            (server or redis_server).url,
            keys,
            limit=limit,
            ttl_s=ttl,
            retry_interval_s=retry_s,
            confirm_timeout_s=confirm_timeout_s,
            semaphore_class=ObservedSemaphore,
            **client_options,
        )
        opened.append(wiring)
        assert isinstance(wiring.semaphore, ObservedSemaphore)
        return wiring.semaphore

    yield make
    for wiring in reversed(opened):
        wiring.close()


class Acquirer:
    """An acquire running in its own thread; read its outcome once `done` is set."""

    def __init__(
        self,
        sem: RedisSemaphore,
        token: str,
        *,
        timeout: float = WAIT_S,
        on_grant: Callable[[Lease], None] | None = None,
    ) -> None:
        self.token = token
        self.lease: Lease | None = None
        self.error: BaseException | None = None
        self.granted_at = 0.0
        self.finished_at = 0.0
        self.done = threading.Event()
        self._on_grant = on_grant
        self._thread = threading.Thread(
            target=self._run, args=(sem, timeout), name=f"acquire-{token}", daemon=True
        )
        self._thread.start()

    def _run(self, sem: RedisSemaphore, timeout: float) -> None:
        try:
            self.lease = sem.acquire(holder(self.token), timeout=timeout, token=self.token)
            self.granted_at = time.monotonic()
            if self._on_grant is not None:
                self._on_grant(self.lease)
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished_at = time.monotonic()
            self.done.set()

    def result(self, timeout: float = WAIT_S) -> Lease:
        assert self.done.wait(timeout), f"acquire of {self.token} did not finish"
        if self.error is not None:
            raise self.error
        assert self.lease is not None
        return self.lease


def queued(redis_client: redis.Redis, keys: Keys) -> list[str]:
    """The waiting tokens in FIFO order (white-box: the port shows no queue)."""
    return [str(token) for token in redis_client.zrange(keys.sem_queue, 0, -1)]


def block(sem: ObservedSemaphore, token: str, **kwargs: Any) -> Acquirer:
    """Start an acquire and return once its first attempt has queued it (no grant)."""
    acquirer = Acquirer(sem, token, **kwargs)
    assert sem.attempted(token).wait(WAIT_S), f"{token} never tried"
    assert not acquirer.done.is_set() or acquirer.error is not None, f"{token} was granted"
    return acquirer


# -- the queue in Redis ----------------------------------------------------------------------


def test_a_waiter_that_gives_up_says_its_place_and_leaves_queue_and_liveness_set(
    make_semaphore: MakeSemaphore, redis_client: redis.Redis, keys: Keys
) -> None:
    sem = make_semaphore(limit=2)
    held = [take(sem, "t1"), take(sem, "t2")]
    with pytest.raises(PermitTimeout, match="no permit within 0 s"):
        take(sem, "t3")
    with pytest.raises(PermitTimeout, match=r"position 1 in the queue, 0 permits free"):
        take(sem, "t4", timeout=0.2)
    assert queued(redis_client, keys) == []
    assert redis_client.zcard(keys.sem_waiters) == 0
    assert all(lease.release() for lease in held)


# -- many workers -----------------------------------------------------------------------------


def test_the_acquire_script_grants_only_in_queue_order(
    make_semaphore: MakeSemaphore, redis_client: redis.Redis, keys: Keys
) -> None:
    # Script level, no threads: the release grants the head of the queue itself, and a
    # waiter behind the head never takes the permit first.
    a, b = make_semaphore(limit=1, retry_s=5.0), make_semaphore(limit=1, retry_s=5.0)
    blocker = take(a, "x")
    assert not a.do_acquire("A1", holder("A1")).granted
    assert not b.do_acquire("B1", holder("B1")).granted
    assert blocker.release()

    assert b.do_acquire("B1", holder("B1")) == Attempt(False, rank=0, free=0), "A1 has it"
    assert queued(redis_client, keys) == ["B1"]
    granted = a.do_acquire("A1", holder("A1"))
    assert granted.granted, "the stored grant, found by the waiter's next call"
    assert 0 < granted.lease_s <= a.grant_ttl_s, "a handed-over grant's short first lease"
    assert a.do_release("A1", granted.fencing)
    assert b.do_acquire("B1", holder("B1")).granted


def test_a_release_hands_the_permit_over_by_wake_up_not_by_retry(
    make_semaphore: MakeSemaphore,
) -> None:
    a, b = make_semaphore(limit=1), make_semaphore(limit=1, retry_s=5.0)
    lease = take(a, "a")
    waiter = block(b, "b")

    released_at = time.monotonic()
    assert lease.release()
    waiter.result()
    # Correctness of the wake-up (the retry would take 5 s), not a benchmark.
    assert waiter.granted_at - released_at < HANDOFF_S
    assert waiter.lease is not None
    assert waiter.lease.release()


def test_a_dead_waiter_is_purged_and_does_not_block_the_queue(
    make_semaphore: MakeSemaphore, redis_client: redis.Redis, keys: Keys
) -> None:
    # The dead process ran the acquire script once (retry 0.1 s: deadline 0.3 s), then died.
    dead = make_semaphore(limit=1, retry_s=0.1)
    live = make_semaphore(limit=1, retry_s=0.1)
    blocker = take(live, "x")
    assert dead.do_acquire("dead", holder("dead")) == Attempt(False, rank=0, free=0)
    dead.close()
    waiter = block(live, "live")
    assert queued(redis_client, keys) == ["dead", "live"]

    assert blocker.release()  # wakes "dead", the head of the queue, who never answers
    lease = waiter.result(timeout=WAIT_S)
    assert lease.holder == holder("live")
    assert "dead" not in queued(redis_client, keys)
    assert redis_client.zscore(keys.sem_waiters, "dead") is None
    assert lease.release()


def test_a_grant_handed_to_a_waiter_that_died_is_wasted_only_for_its_short_first_lease(
    make_semaphore: MakeSemaphore, redis_client: redis.Redis, keys: Keys
) -> None:
    # The dead process queued (its deadline 0.3 s away), then died; the release grants it the
    # permit (it was the head, still within its deadline), announced to nobody.
    dead = make_semaphore(limit=1, ttl=1.0, retry_s=0.1)
    live = make_semaphore(limit=1, ttl=1.0, retry_s=0.1)
    assert dead.grant_ttl_s == 0.5, "half the lease: above the waiter's 0.3 s deadline"
    blocker = take(live, "x")
    assert not dead.do_acquire("dead", holder("dead")).granted
    dead.close()
    waiter = block(live, "live")
    released_at = time.monotonic()
    assert blocker.release()
    lease_end = redis_client.zscore(keys.sem_holders, "dead")
    assert lease_end is not None, "granted to the head of the queue, inside the release"
    assert queued(redis_client, keys) == ["live"]

    lease = waiter.result(timeout=WAIT_S)
    waited = waiter.granted_at - released_at
    assert 0.4 < waited < 0.5 + 0.1 + HANDOFF_S, "the dead one's first lease, not its 1 s TTL"
    assert redis_client.zscore(keys.sem_holders, "dead") is None
    assert lease.release()


def test_every_ended_lease_is_purged_however_many_and_none_revives(
    make_semaphore: MakeSemaphore, redis_client: redis.Redis, keys: Keys
) -> None:
    sem = make_semaphore(limit=200, ttl=0.05)
    leases = [take(sem, f"t{n}") for n in range(130)]
    # Every lease ends; nobody runs a script meanwhile (so nothing is purged yet).
    time.sleep(0.1)
    assert redis_client.zcard(keys.sem_holders) == 130
    assert sem.renew_all(leases) == [False] * 130, "an ended lease is never extended"
    assert redis_client.zcard(keys.sem_holders) == 0, "all 130 purged in one call"
    assert redis_client.hlen(keys.sem_info) == 0
    assert sem.in_use() == 0
    fresh = take(sem, "fresh")
    assert sem.in_use() == 1
    assert fresh.release()


def test_one_limit_for_every_worker_whatever_their_own_default(
    make_semaphore: MakeSemaphore,
) -> None:
    old, new = make_semaphore(limit=5), make_semaphore(limit=2)
    assert old.configure_limit() == 5
    assert new.configure_limit() == 2, "the newest configuration is the cap for all"
    assert old.limit() == new.limit() == 2
    held = [take(old, "a"), take(old, "b")]
    with pytest.raises(PermitTimeout):
        take(old, "c")  # its own default of 5 is not the cap
    new.set_limit(3)  # an operator's change
    assert old.limit() == 3
    assert old.configure_limit() == 3, "a worker starting later keeps the operator's cap"
    held.append(take(old, "c"))
    assert all(lease.release() for lease in held)
    assert not old.restore_limit(), "the write-back after a restart only fills a gap"


def test_renew_all_renews_each_grant_it_owns_and_no_other(make_semaphore: MakeSemaphore) -> None:
    sem = make_semaphore(limit=3)
    a, b = take(sem, "a"), take(sem, "b")
    assert b.release()
    assert sem.renew_all([a, b]) == [True, False]
    assert sem.renew_all([]) == []
    assert a.release()


# -- the limit --------------------------------------------------------------------------------


def test_a_forgotten_operator_cap_equal_to_the_default_comes_back_as_the_operators(
    make_semaphore: MakeSemaphore, redis_client: redis.Redis
) -> None:
    sem = make_semaphore(limit=4)
    sem.set_limit(4)  # pinned by an operator, at the value every worker has by default
    redis_client.flushall()  # Redis restarted empty; nobody noticed yet
    take(sem, "a").release()  # the first acquire finds no cap and gives the known one back
    later = make_semaphore(limit=7)
    assert later.configure_limit() == 4, "a later start-up keeps the operator's cap"


def test_a_forgotten_configured_cap_comes_back_as_a_configuration_not_an_operators(
    make_semaphore: MakeSemaphore, redis_client: redis.Redis
) -> None:
    a, b = make_semaphore(limit=4), make_semaphore(limit=6)
    a.configure_limit()
    b.configure_limit()  # the newest configuration: 6 for all
    assert a.limit() == 6
    redis_client.flushall()
    assert a.restore_limit(), "the gap is filled with the cap a knew"
    assert b.limit() == 6
    assert make_semaphore(limit=7).configure_limit() == 7, "still a configuration's cap"


def test_an_operator_cap_survives_an_acquire_that_meets_the_emptied_redis_first(
    make_semaphore: MakeSemaphore, redis_client: redis.Redis
) -> None:
    sem = make_semaphore(limit=8)
    sem.configure_limit()
    sem.set_limit(2)
    redis_client.flushall()
    held = [take(sem, "a"), take(sem, "b")]  # this acquire restores 2, not its default 8
    assert sem.limit() == 2
    with pytest.raises(PermitTimeout):
        take(sem, "c")
    assert all(lease.release() for lease in held)


def test_raising_the_limit_wakes_waiters_at_once_not_at_their_next_retry(
    make_semaphore: MakeSemaphore,
) -> None:
    a, b = make_semaphore(limit=1), make_semaphore(limit=1, retry_s=5.0)
    lease = take(a, "a")
    waiters = [block(b, "b1"), block(b, "b2")]

    raised_at = time.monotonic()
    a.set_limit(3)
    for waiter in waiters:
        waiter.result()
        assert waiter.granted_at - raised_at < HANDOFF_S
    assert b.in_use() == 3
    assert b.limit() == 3
    for held in [lease, *(w.result() for w in waiters)]:
        assert held.release()


# -- closing and failures ---------------------------------------------------------------------


def test_close_wakes_a_local_waiter_at_once_not_at_its_next_retry(
    make_semaphore: MakeSemaphore, redis_client: redis.Redis, keys: Keys
) -> None:
    other, sem = make_semaphore(limit=1), make_semaphore(limit=1, retry_s=5.0)
    lease = take(other, "a")
    waiter = block(sem, "b", timeout=WAIT_S)

    closed_at = time.monotonic()
    sem.close()
    with pytest.raises(PermitTimeout, match="closed"):
        waiter.result()
    assert waiter.finished_at - closed_at < HANDOFF_S
    assert queued(redis_client, keys) == []  # it left the queue

    with pytest.raises(PermitTimeout, match="closed"):
        take(sem, "c", timeout=WAIT_S)
    assert other.in_use() == 1  # held permits stay
    assert lease.release()


def test_a_hung_redis_gives_backend_unavailable_never_a_hang(
    make_semaphore: MakeSemaphore, tmp_path: Path
) -> None:
    with RedisServer(workdir=tmp_path) as server:
        fast = {
            "server": server,
            "socket_timeout": 0.3,
            "socket_connect_timeout": 0.3,
            "retry": Retry(NoBackoff(), 1),
        }
        sem = make_semaphore(limit=1, retry_s=0.2, **fast)
        lease = take(sem, "a")
        waiter = block(sem, "w", timeout=1.0)
        server.pause()
        try:
            started = time.monotonic()
            with pytest.raises((BackendUnavailable, PermitTimeout)):
                take(sem, "b", timeout=1.0)
            assert time.monotonic() - started < 1.0 + 2.0
            assert waiter.done.wait(1.0 + 2.0), "a waiter hung on a paused Redis"
            assert isinstance(waiter.error, (BackendUnavailable, PermitTimeout))
            # (Not release: a command that timed out may still run once Redis resumes.)
            for call in (sem.in_use, lease.renew):
                with pytest.raises(BackendUnavailable, match="check that TASKMON_REDIS_URL"):
                    call()
        finally:
            server.resume()
        assert sem.in_use() == 1  # back as soon as Redis answers; the lease survived
        assert lease.release()


def test_wake_ups_are_subscribed_later_when_redis_did_not_answer_at_first(
    make_semaphore: MakeSemaphore, tmp_path: Path
) -> None:
    with RedisServer(workdir=tmp_path) as server:
        other = make_semaphore(limit=1, server=server)
        lease = take(other, "a")
        server.pause()
        try:
            started = time.monotonic()
            sem = make_semaphore(limit=1, retry_s=0.2, server=server, confirm_timeout_s=0.2)
            assert time.monotonic() - started < 0.2 + HANDOFF_S  # constructing did not hang
            assert not sem.listening.is_set()
        finally:
            server.resume()
        assert sem.listening.wait(WAIT_S), "the semaphore never subscribed to wake-ups"
        waiter = block(sem, "b")
        assert lease.release()
        assert waiter.result().release()
