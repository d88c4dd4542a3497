"""Both Semaphore adapters behind one rig, so one suite states the port's contract.

`rig.make(limit, ttl_s)` is a semaphore on a store of its own; `rig.peer(sem)` is a second
worker on the same store: for Redis another process's wiring (own client and subscriber, same
namespace), for memory the same object, since memory mode has one semaphore per process.
`rig.queued(sem)` reads who waits, in order (white-box: the port shows no queue), and
`rig.let_leases_end(sem)` moves time past every lease: the fake clock in memory, real time
(short leases) in Redis, whose clock is its own `TIME`.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import redis

from taskmon.memory import InMemorySemaphore
from taskmon.ports import Holder, Lease, Semaphore
from taskmon.redis.keys import Keys
from taskmon.redis.semaphore import RedisSemaphore
from tests.support.redis_wiring import SemaphoreWiring, wire_semaphore
from tests.support.timing import WAIT_S, FakeClock, wait_for

# Long enough that no lease ends during a test unless the test means it to.
LONG_TTL_S = 60.0


class SemaphoreRig(Protocol):
    kind: str
    # A lease short enough to let end within a test, long enough that no call races it.
    short_ttl_s: float

    def make(self, limit: int = 1, *, ttl_s: float = LONG_TTL_S) -> Semaphore: ...

    def peer(self, of: Semaphore) -> Semaphore: ...

    def queued(self, sem: Semaphore) -> list[str]: ...

    def pass_time(self, seconds: float) -> None: ...

    def let_leases_end(self, sem: Semaphore) -> None: ...

    def close(self) -> None: ...


@dataclass
class MemoryRig:
    kind = "memory"
    short_ttl_s = 10.0
    clock: FakeClock = field(default_factory=FakeClock)
    made: list[InMemorySemaphore] = field(default_factory=list)

    def make(self, limit: int = 1, *, ttl_s: float = LONG_TTL_S) -> Semaphore:
        sem = InMemorySemaphore(limit, lease_ttl_s=ttl_s, clock=self.clock)
        self.made.append(sem)
        return sem

    def peer(self, of: Semaphore) -> Semaphore:
        return of

    def queued(self, sem: Semaphore) -> list[str]:
        assert isinstance(sem, InMemorySemaphore)
        with sem._cond:
            return list(sem._queue)

    def pass_time(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def let_leases_end(self, sem: Semaphore) -> None:
        self.clock.advance(sem.lease_ttl_s)

    def close(self) -> None:
        for sem in self.made:
            sem.close()  # wakes any waiter a failed test left behind


@dataclass
class _Store:
    keys: Keys
    limit: int
    ttl_s: float


@dataclass
class RedisRig:
    url: str
    kind = "redis"
    # Real time: every call a test makes on a short lease must fit in it on a busy machine.
    short_ttl_s = 1.0
    wirings: list[SemaphoreWiring] = field(default_factory=list)
    stores: dict[int, _Store] = field(default_factory=dict)
    observer: redis.Redis | None = None

    def make(self, limit: int = 1, *, ttl_s: float = LONG_TTL_S) -> Semaphore:
        store = _Store(Keys(prefix=f"sc-{uuid.uuid4().hex[:12]}"), limit, ttl_s)
        return self._wire(store)

    def peer(self, of: Semaphore) -> Semaphore:
        return self._wire(self.stores[id(of)])

    def _wire(self, store: _Store) -> Semaphore:
        wiring = wire_semaphore(self.url, store.keys, limit=store.limit, ttl_s=store.ttl_s)
        self.wirings.append(wiring)
        self.stores[id(wiring.semaphore)] = store
        return wiring.semaphore

    def queued(self, sem: Semaphore) -> list[str]:
        if self.observer is None:
            self.observer = redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5)
        return [str(t) for t in self.observer.zrange(self.stores[id(sem)].keys.sem_queue, 0, -1)]

    def pass_time(self, seconds: float) -> None:
        time.sleep(seconds)  # deliberate: leases follow Redis TIME, which no test can move

    def let_leases_end(self, sem: Semaphore) -> None:
        # A margin for the two clocks (ours and Redis's) reading the same instant differently.
        time.sleep(sem.lease_ttl_s + 0.05)

    def close(self) -> None:
        for wiring in reversed(self.wirings):
            wiring.close()
        if self.observer is not None:
            self.observer.close()


def holder(name: str | int = 0, worker: str = "w:1") -> Holder:
    return Holder(worker=worker, task_id=f"task-{name}")


def take(sem: Semaphore, token: str, who: Holder | None = None, timeout: float = 0) -> Lease:
    """Acquire with owner token `token`, as the service does with the task id."""
    return sem.acquire(who or holder(token), timeout=timeout, token=token)


class Waiter:
    """An acquire running in its own thread; read its outcome once `done` is set.

    `on_grant` runs in that thread as soon as the permit is granted (to record grant order).
    """

    def __init__(
        self,
        sem: Semaphore,
        token: str,
        *,
        timeout: float = WAIT_S,
        on_grant: Callable[[Lease], None] | None = None,
    ) -> None:
        self.token = token
        self._on_grant = on_grant
        self.lease: Lease | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(sem, timeout), name=f"acquire-{token}", daemon=True
        )
        self._thread.start()

    def _run(self, sem: Semaphore, timeout: float) -> None:
        try:
            self.lease = take(sem, self.token, timeout=timeout)
            if self._on_grant is not None:
                self._on_grant(self.lease)
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def result(self, timeout: float = WAIT_S) -> Lease:
        assert self.done.wait(timeout), f"the acquire of {self.token} did not return"
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        assert self.lease is not None
        return self.lease


def start_waiter(
    rig: SemaphoreRig,
    sem: Semaphore,
    token: str,
    *,
    timeout: float = WAIT_S,
    on_grant: Callable[[Lease], None] | None = None,
) -> Waiter:
    """An acquire that is known to wait (queued, not granted) when this returns."""
    waiter = Waiter(sem, token, timeout=timeout, on_grant=on_grant)
    wait_for(lambda: token in rig.queued(sem) or waiter.done.is_set(), message=f"{token} to queue")
    assert not waiter.done.is_set(), f"expected the acquire of {token} to wait"
    return waiter


# mypy proves here that both rigs implement the protocol, and both adapters the port.
_RIGS: tuple[type[SemaphoreRig], ...] = (MemoryRig, RedisRig)
_SEMAPHORES: tuple[type[Semaphore], ...] = (InMemorySemaphore, RedisSemaphore)
