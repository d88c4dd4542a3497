"""One Hypothesis state machine, run against both semaphores (in memory and Redis).

The model keeps the tokens held, each with its fencing and the window in which its lease
ends. In memory a fake clock makes that window a single instant. Against Redis, time is real
(Redis TIME) and leases are short, so a lease's end is only known within the interval its
grant call took; the machine therefore never runs a call while a lease could end during it
(it first lets every lease end, "settles"). Only when a call was so slow that a lease might
have ended meanwhile does it accept any outcome possible under that doubt, then settle again;
on an idle machine that never happens, and every check is exact.

A second test drives concurrent acquirers from threads and asserts only what must hold for
every interleaving.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
import redis
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from taskmon.harness.redis_server import RedisServer
from taskmon.memory import InMemorySemaphore
from taskmon.ports import Holder, Lease, PermitTimeout, Semaphore
from taskmon.redis.keys import Keys
from taskmon.redis.semaphore import RedisSemaphore
from taskmon.redis.subscriber import RedisSubscriber
from tests.support.timing import FakeClock

T = TypeVar("T")

MACHINE_SETTINGS = settings(max_examples=30, stateful_step_count=18, deadline=None, database=None)

# -- backends: a semaphore plus the clock its leases follow ------------------------------------


class Backend:
    """A fresh semaphore (own namespace for Redis) and how time moves for it."""

    sem: Semaphore
    ttl: float
    guard: float  # a call starts only when every lease has at least this long to live
    margin: float  # how far a lease's end may lie outside its grant call's interval

    def now(self) -> float:
        raise NotImplementedError

    def waiting(self) -> int:
        """How many acquires are queued (white-box: the port shows no queue)."""
        raise NotImplementedError

    def sleep_until(self, when: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.sem.close()


class MemoryBackend(Backend):
    ttl, guard, margin = 10.0, 0.0, 0.0

    def __init__(self, limit: int) -> None:
        self.clock = FakeClock()
        self.sem = InMemorySemaphore(limit, lease_ttl_s=self.ttl, clock=self.clock)

    def waiting(self) -> int:
        assert isinstance(self.sem, InMemorySemaphore)
        with self.sem._cond:
            return len(self.sem._queue)

    def now(self) -> float:
        return self.clock()

    def sleep_until(self, when: float) -> None:
        self.clock.advance(max(0.0, when - self.clock()))


class RedisBackend(Backend):
    # Short leases keep the deliberate expiry sleeps cheap; the guard covers a slow call.
    guard, margin = 0.05, 0.01

    def __init__(
        self,
        client: redis.Redis,
        subscriber: RedisSubscriber,
        limit: int,
        *,
        keys: Keys | None = None,
        ttl: float = 0.15,
    ) -> None:
        self.ttl = ttl
        self.client = client
        self.keys = keys or Keys(prefix=f"m-{uuid.uuid4().hex[:12]}")
        self.sem = RedisSemaphore(
            client,
            self.keys,
            default_limit=limit,
            lease_ttl_s=ttl,
            subscriber=subscriber,
            retry_interval_s=0.5,
        )

    def waiting(self) -> int:
        return int(self.client.zcard(self.keys.sem_queue))

    def now(self) -> float:
        return time.monotonic()

    def sleep_until(self, when: float) -> None:
        time.sleep(max(0.0, when - time.monotonic()))  # deliberate: let leases end


class Backends:
    """Fresh backends of one kind; for Redis, each worker has its own client and subscriber."""

    def __init__(self, server: RedisServer | None) -> None:
        self._server = server
        self._opened: list[tuple[RedisSubscriber, redis.Redis]] = []

    def _worker(self) -> tuple[redis.Redis, RedisSubscriber]:
        assert self._server is not None
        client = redis.Redis.from_url(self._server.url, decode_responses=True, socket_timeout=5)
        subscriber = RedisSubscriber(client)
        self._opened.append((subscriber, client))
        return client, subscriber

    def new(self, limit: int, *, ttl: float | None = None) -> Backend:
        """A semaphore on a namespace of its own (one per example of a machine)."""
        if self._server is None:
            return MemoryBackend(limit)
        if not self._opened:
            self._worker()
        subscriber, client = self._opened[0]
        if ttl is None:
            return RedisBackend(client, subscriber, limit)
        return RedisBackend(client, subscriber, limit, ttl=ttl)

    def peer(self, of: Backend, limit: int) -> Backend | None:
        """Another worker on the same namespace as `of` (None in memory: one process)."""
        if not isinstance(of, RedisBackend):
            return None
        client, subscriber = self._worker()
        return RedisBackend(client, subscriber, limit, keys=of.keys, ttl=of.ttl)

    def close(self) -> None:
        for subscriber, client in reversed(self._opened):
            subscriber.close()
            client.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backends(request: pytest.FixtureRequest) -> Iterator[Backends]:
    server = request.getfixturevalue("redis_server") if request.param == "redis" else None
    kit = Backends(server)
    try:
        yield kit
    finally:
        kit.close()


# -- the model ---------------------------------------------------------------------------------


@dataclass
class Held:
    lease: Lease
    ends_from: float  # the lease cannot end before this (backend clock)
    ends_by: float  # the lease has surely ended at this time


@dataclass
class Model:
    limit: int
    held: dict[str, Held] = field(default_factory=dict)
    past: list[Lease] = field(default_factory=list)  # released or ended: never valid again
    last_fencing: int = 0
    kept_over_limit: set[str] = field(default_factory=set)  # holders when the limit was lowered


class SemaphoreMachine(RuleBasedStateMachine):
    def __init__(self, backends: Backends) -> None:
        super().__init__()
        self.model = Model(limit=2)
        self.backend = backends.new(self.model.limit)
        self.sem = self.backend.sem
        self.tokens = itertools.count()

    # -- time ----------------------------------------------------------------------------

    def _settle(self) -> None:
        """If a lease could end soon, let every lease end: no call may race an expiry."""
        now = self.backend.now()
        if any(h.ends_from - self.backend.guard <= now for h in self.model.held.values()):
            self._end_all_leases()

    def _end_all_leases(self) -> None:
        if self.model.held:
            self.backend.sleep_until(max(h.ends_by for h in self.model.held.values()))
        self.model.past.extend(h.lease for h in self.model.held.values())
        self.model.held.clear()
        self.model.kept_over_limit.clear()

    def _timed(self, call: Callable[[], T]) -> tuple[float, float, T]:
        started = self.backend.now()
        result = call()
        return started, self.backend.now(), result

    def _raced_an_expiry(self, finished: float) -> bool:
        """True when some lease may have ended while the last call ran (a very slow call)."""
        return any(h.ends_from <= finished for h in self.model.held.values())

    def _window(self, started: float, finished: float) -> tuple[float, float]:
        return (
            started + self.backend.ttl - self.backend.margin,
            finished + self.backend.ttl + self.backend.margin,
        )

    def _try_acquire(self, token: str, worker: str = "w:m") -> Lease | None:
        try:
            return self.sem.acquire(Holder(worker, token), timeout=0, token=token)
        except PermitTimeout:
            return None

    def _granted(self, lease: Lease, started: float, finished: float) -> None:
        assert lease.fencing > self.model.last_fencing, "fencing must grow with every grant"
        self.model.last_fencing = lease.fencing
        self.model.held[lease.token] = Held(lease, *self._window(started, finished))

    # -- rules ---------------------------------------------------------------------------

    @rule(data=st.data())
    def acquire_new_or_past_token(self, data: st.DataObject) -> None:
        self._settle()
        reusable = sorted({lease.token for lease in self.model.past} - set(self.model.held))
        reuse: bool = data.draw(st.booleans(), label="reuse a past token")
        if reusable and reuse:
            token: str = data.draw(st.sampled_from(reusable), label="token")
        else:
            token = f"t{next(self.tokens)}"
        expect_grant = len(self.model.held) < self.model.limit
        started, finished, lease = self._timed(lambda: self._try_acquire(token))
        if self._raced_an_expiry(finished):
            if lease is not None:
                self._granted(lease, started, finished)
            self._end_all_leases()
            return
        if expect_grant:
            assert lease is not None, "a permit was free"
            assert lease.token == token
            self._granted(lease, started, finished)
        else:
            assert lease is None, f"granted over the limit {self.model.limit}"

    @precondition(lambda self: self.model.held)
    @rule(data=st.data())
    def acquire_a_held_token_again(self, data: st.DataObject) -> None:
        self._settle()
        if not self.model.held:
            return
        token = data.draw(st.sampled_from(sorted(self.model.held)), label="held token")
        held = self.model.held[token]
        # Another holder description: the permit keeps the one it was granted with.
        started, finished, lease = self._timed(lambda: self._try_acquire(token, "w:retry"))
        if self._raced_an_expiry(finished):
            if lease is not None and lease.fencing != held.lease.fencing:
                self._granted(lease, started, finished)
            self._end_all_leases()
            return
        assert lease is not None, "a repeated acquire of a held token must return it"
        assert (lease.fencing, lease.holder) == (held.lease.fencing, held.lease.holder)

    @precondition(lambda self: self.model.held)
    @rule(data=st.data())
    def release_a_held_permit(self, data: st.DataObject) -> None:
        self._settle()
        if not self.model.held:
            return
        token = data.draw(st.sampled_from(sorted(self.model.held)), label="held token")
        _, finished, released = self._timed(self.model.held[token].lease.release)
        held = self.model.held.pop(token)
        self.model.past.append(held.lease)
        self.model.kept_over_limit.discard(token)
        if self._raced_an_expiry(finished) or finished >= held.ends_from:
            self._end_all_leases()
            return
        assert released is True

    @precondition(lambda self: self.model.past)
    @rule(data=st.data())
    def release_or_renew_a_past_lease(self, data: st.DataObject) -> None:
        lease = data.draw(st.sampled_from(self.model.past), label="past lease")
        renew = data.draw(st.booleans(), label="renew")
        assert (lease.renew() if renew else lease.release()) is False, "a lost permit came back"

    @precondition(lambda self: self.model.held)
    @rule(data=st.data())
    def renew_a_held_permit(self, data: st.DataObject) -> None:
        self._settle()
        if not self.model.held:
            return
        token = data.draw(st.sampled_from(sorted(self.model.held)), label="held token")
        held = self.model.held[token]
        started, finished, renewed = self._timed(held.lease.renew)
        if self._raced_an_expiry(finished):
            if renewed:
                held.ends_by = self._window(started, finished)[1]
            self._end_all_leases()
            return
        assert renewed is True
        held.ends_from, held.ends_by = self._window(started, finished)

    @precondition(lambda self: self.model.held)
    @rule()
    def let_every_lease_end(self) -> None:
        self._end_all_leases()

    @rule(limit=st.integers(1, 3))
    def set_limit(self, limit: int) -> None:
        self.sem.set_limit(limit)
        if limit < self.model.limit:
            self.model.kept_over_limit = set(self.model.held)
        self.model.limit = limit

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def the_semaphore_agrees_with_the_model(self) -> None:
        self._settle()
        _, finished, (in_use, holders) = self._timed(
            lambda: (self.sem.in_use(), self.sem.holders())
        )
        assert self.sem.limit() == self.model.limit
        kept = len(self.model.kept_over_limit & set(self.model.held))
        assert in_use <= max(self.model.limit, kept), "more holders than the limit allows"
        if self._raced_an_expiry(finished):
            assert in_use <= len(self.model.held)
            self._end_all_leases()
            return
        assert in_use == len(self.model.held)
        assert {(h.token, h.fencing) for h in holders} == {
            (token, h.lease.fencing) for token, h in self.model.held.items()
        }

    def teardown(self) -> None:
        try:
            for token in list(self.model.held):
                self.release_a_held_permit_by_token(token)
            # Every holder released or expired: no permit may be lost.
            assert self.sem.in_use() == 0
        finally:
            self.backend.close()

    def release_a_held_permit_by_token(self, token: str) -> None:
        self._settle()
        held = self.model.held.pop(token, None)
        if held is not None:
            released = held.lease.release()
            assert released or self.backend.now() >= held.ends_from


def test_semaphore_state_machine(backends: Backends) -> None:
    def machine() -> SemaphoreMachine:
        return SemaphoreMachine(backends)

    # Hypothesis takes any factory of machines, though its hint names the class only.
    run_state_machine_as_test(machine, settings=MACHINE_SETTINGS)  # type: ignore[arg-type]


# -- concurrency -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("threads", "limit", "change_limit"), [(6, 2, False), (8, 3, True)], ids=["fixed", "changing"]
)
def test_concurrent_acquirers_never_exceed_the_limit(
    backends: Backends, threads: int, limit: int, change_limit: bool
) -> None:
    """Threads (of one or two workers) race for permits; what holds for every interleaving."""
    first = backends.new(limit, ttl=30.0)  # no lease ends during the run
    peer = backends.peer(first, limit)
    workers_sems = [first] if peer is None else [first, peer]
    rounds = 5
    lock = threading.Lock()
    holding = 0
    most = 0
    fencings: list[int] = []
    outcomes: list[str] = []
    highest_limit = limit
    errors: list[BaseException] = []

    def run(index: int) -> None:
        nonlocal holding, most
        sem = workers_sems[index % len(workers_sems)].sem
        for round_ in range(rounds):
            token = f"c{index}-{round_}"
            try:
                lease = sem.acquire(Holder(f"w:{index}", token), timeout=3.0, token=token)
            except PermitTimeout:
                with lock:
                    outcomes.append("timeout")
                continue
            with lock:
                holding += 1
                most = max(most, holding)
                fencings.append(lease.fencing)
                outcomes.append("granted")
                assert holding <= highest_limit, f"{holding} holders over {highest_limit}"
            assert sem.in_use() <= highest_limit  # the work done under the permit
            with lock:
                holding -= 1
            assert lease.release() is True

    def guarded(index: int) -> Callable[[], None]:
        def target() -> None:
            try:
                run(index)
            except BaseException as exc:
                errors.append(exc)

        return target

    workers = [threading.Thread(target=guarded(i), daemon=True) for i in range(threads)]
    for thread in workers:
        thread.start()
    if change_limit:
        # Raise first so the "highest" bound is in force before any grant could use it.
        highest_limit = limit + 1
        for new in (limit + 1, 1, limit, limit + 1, limit):
            first.sem.set_limit(new)
    for thread in workers:
        thread.join(30)
    try:
        assert not any(t.is_alive() for t in workers), "an acquirer hung"
        if errors:
            raise errors[0]
        assert len(outcomes) == threads * rounds  # each acquire granted or timed out
        assert set(outcomes) <= {"granted", "timeout"}
        assert len(set(fencings)) == len(fencings), "a fencing token was granted twice"
        assert 1 <= most <= highest_limit
        assert first.sem.in_use() == 0
        assert first.waiting() == 0, "every acquire that gave up or got a permit left the queue"
    finally:
        for backend in workers_sems:
            backend.close()
