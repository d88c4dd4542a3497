"""The subjects measured side by side: taskmon's semaphore and its peers, behind one shape.

Every subject is built in a worker process, on its own Redis client, the way that library's
documentation shows it used; `acquire` answers the held object (or None on timeout) and
`release` answers whether the library said the release took. Mutexes (limit 1 by design) run
the limit-1 measurements, and the uncontended N-process one on a key per process; they sit
out the measurements that need a limit above 1.
"""

from __future__ import annotations

import importlib.metadata
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import redis

from taskmon.ports import Holder, PermitTimeout
from taskmon.redis.keys import Keys
from taskmon.redis.subscriber import RedisSubscriber

from .counting import CountingSemaphore
from .fair_semaphore import FairSemaphore


class Subject(Protocol):
    """One semaphore (or mutex) of one library, opened on one name in one worker."""

    @property
    def attempts(self) -> int | None: ...  # acquire script runs so far; None: not counted

    def acquire(self, token: str, timeout: float) -> object | None: ...

    def release(self, held: object) -> bool: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Env:
    """What a worker gives a subject to build on."""

    url: str
    name: str  # the worker's name, e.g. "bench:3"
    taskmon_client: redis.Redis
    subscriber: RedisSubscriber
    lease_ttl_s: float
    retry_s: float


LEASE_S = 30  # every peer's lock/lease expiry, as long as taskmon's default lease
POLL_S = 0.01  # the retry step of the fair semaphore, which the book leaves to the caller


class _Taskmon:
    def __init__(self, env: Env, prefix: str, limit: int) -> None:
        self.name = env.name
        self.sem = CountingSemaphore(
            env.taskmon_client,
            Keys(prefix),
            default_limit=limit,
            lease_ttl_s=env.lease_ttl_s,
            subscriber=env.subscriber,
            retry_interval_s=env.retry_s,
        )
        self.sem.configure_limit()

    @property
    def attempts(self) -> int | None:
        return self.sem.attempts

    def acquire(self, token: str, timeout: float) -> object | None:
        try:
            return self.sem.acquire(Holder(self.name, token), timeout=timeout, token=token)
        except PermitTimeout:
            return None

    def release(self, held: object) -> bool:
        return self.sem.release(held)  # type: ignore[arg-type]

    def close(self) -> None:
        self.sem.close()


class _Uncounted:
    """The shared end of the peers: their own client, no attempt count, and one lock or
    semaphore object per timeout, built once and reused (a client holds one permit at a time,
    and every library here allows acquiring again after a release)."""

    def __init__(self, env: Env) -> None:
        self.client = redis.Redis.from_url(env.url)
        self._objects: dict[float, Any] = {}

    @property
    def attempts(self) -> int | None:
        return None

    def close(self) -> None:
        self.client.close()

    def object_for(self, timeout: float) -> Any:
        if timeout not in self._objects:
            self._objects[timeout] = self.build(timeout)
        return self._objects[timeout]

    def build(self, timeout: float) -> Any:
        raise NotImplementedError


class _RedisPyLock(_Uncounted):
    def __init__(self, env: Env, prefix: str, limit: int) -> None:
        super().__init__(env)
        self.key = f"{prefix}:lock"

    def build(self, timeout: float) -> Any:
        return self.client.lock(self.key, timeout=LEASE_S, blocking_timeout=timeout)

    def acquire(self, token: str, timeout: float) -> object | None:
        lock = self.object_for(timeout)
        return lock if lock.acquire() else None

    def release(self, held: object) -> bool:
        cast("Any", held).release()
        return True  # raises LockNotOwnedError otherwise


class _PythonRedisLock(_Uncounted):
    def __init__(self, env: Env, prefix: str, limit: int) -> None:
        super().__init__(env)
        self.key = f"{prefix}:lock"

    def build(self, timeout: float) -> Any:
        import redis_lock

        return redis_lock.Lock(self.client, self.key, expire=LEASE_S)

    def acquire(self, token: str, timeout: float) -> object | None:
        lock = self.object_for(timeout)
        return lock if lock.acquire(blocking=True, timeout=timeout) else None

    def release(self, held: object) -> bool:
        cast("Any", held).release()
        return True  # raises NotAcquired otherwise


class _Redlock(_Uncounted):
    def __init__(self, env: Env, prefix: str, limit: int) -> None:
        super().__init__(env)
        self.key = f"{prefix}:lock"

    def build(self, timeout: float) -> Any:
        from pottery import Redlock

        return Redlock(key=self.key, masters={self.client}, auto_release_time=LEASE_S)

    def acquire(self, token: str, timeout: float) -> object | None:
        lock = self.object_for(timeout)
        return lock if lock.acquire(blocking=True, timeout=timeout) else None

    def release(self, held: object) -> bool:
        cast("Any", held).release()
        return True  # raises ReleaseUnlockedLock otherwise


class _RateLimitersSemaphore(_Uncounted):
    def __init__(self, env: Env, prefix: str, limit: int) -> None:
        super().__init__(env)
        self.prefix, self.limit = prefix, limit

    def build(self, timeout: float) -> Any:
        from limiters import SyncSemaphore

        return SyncSemaphore(name=self.prefix, capacity=self.limit, max_sleep=timeout,
                             expiry=LEASE_S, connection=self.client)  # fmt: skip

    def acquire(self, token: str, timeout: float) -> object | None:
        from limiters import MaxSleepExceededError

        sem = self.object_for(timeout)
        try:
            sem.__enter__()
        except MaxSleepExceededError:
            return None
        return cast("object", sem)

    def release(self, held: object) -> bool:
        cast("Any", held).__exit__(None, None, None)
        return True  # an LPUSH of a permit: it cannot tell


class _PyRedisSemaphore(_Uncounted):
    """One Semaphore object holds one slot: a client holds one at a time, so one object."""

    def __init__(self, env: Env, prefix: str, limit: int) -> None:
        super().__init__(env)
        self.prefix, self.limit = prefix, limit

    def build(self, timeout: float) -> Any:
        from redis_semaphore import Semaphore, SemaphoreConfig

        config = SemaphoreConfig(name=self.prefix, limit=self.limit, lock_timeout=LEASE_S,
                                 acquire_timeout=timeout)  # fmt: skip
        return Semaphore(self.client, config)

    def acquire(self, token: str, timeout: float) -> object | None:
        from redis_semaphore import AcquireTimeoutError

        sem = self.object_for(timeout)
        try:
            return cast("object", sem) if sem.acquire(blocking=True).success else None
        except AcquireTimeoutError:
            return None

    def release(self, held: object) -> bool:
        return bool(cast("Any", held).release())


class _FairSemaphore(_Uncounted):
    def __init__(self, env: Env, prefix: str, limit: int) -> None:
        super().__init__(env)
        self.sem = FairSemaphore(self.client, prefix, limit, timeout_s=LEASE_S)

    def acquire(self, token: str, timeout: float) -> object | None:
        deadline = time.monotonic() + timeout
        while (identifier := self.sem.try_acquire(uuid.uuid4().hex)) is None:
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_S)
        return identifier

    def release(self, held: object) -> bool:
        return self.sem.release(str(held))


@dataclass(frozen=True)
class Peer:
    """A subject's id (in metric keys), its label, what it is, and how a worker builds it."""

    name: str
    label: str
    distribution: str | None  # the PyPI distribution measured; None: written here
    mutex: bool  # limit 1 by design
    waits_by: str  # how a waiter learns of a free permit
    build: Callable[[Env, str, int], Any]

    def version(self) -> str:
        if self.distribution is None:
            return "bench"
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return "missing"


TASKMON = "taskmon"
PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (
        Peer(TASKMON, "taskmon", "taskmon", False, "hand-over, pub/sub", _Taskmon),
        Peer("redis-py-lock", "redis-py Lock", "redis", True, "polls every 0.1 s", _RedisPyLock),
        Peer(
            "python-redis-lock",
            "python-redis-lock",
            "python-redis-lock",
            True,
            "BLPOP on a signal list",
            _PythonRedisLock,
        ),
        Peer("pottery-redlock", "pottery Redlock", "pottery", True, "polls 0-0.2 s", _Redlock),
        Peer(
            "redis-rate-limiters",
            "redis-rate-limiters",
            "redis-rate-limiters",
            False,
            "BLPOP on the permit list",
            _RateLimitersSemaphore,
        ),
        Peer(
            "py-redis-semaphore",
            "py-redis-semaphore",
            "py-redis-semaphore",
            False,
            "BLPOP on a wake-up list",
            _PyRedisSemaphore,
        ),
        Peer(
            "ria-fair-semaphore",
            "fair semaphore (Redis in Action)",
            None,
            False,
            f"polls every {POLL_S:g} s",
            _FairSemaphore,
        ),
    )
}


def installed() -> list[str]:
    """The subjects whose library is installed here (taskmon and the fair semaphore always)."""
    return [name for name, peer in PEERS.items() if peer.version() != "missing"]
