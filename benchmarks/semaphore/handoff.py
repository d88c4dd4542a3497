"""The handoff: A holds the only permit, B waits for it, A releases; how long until B has it.

The worker-side steps (run inside a worker, on its semaphore) and the parent-side sequence
that drives worker 0 as A and worker 1 as B.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from taskmon.ports import Holder, Lease
from taskmon.redis.keys import Keys

from .counting import CountingSemaphore
from .params import (
    ACQUIRE_TIMEOUT_S,
    CALL_TIMEOUT_S,
    HANDOFF_CHANNEL_WAIT_S,
    HANDOFF_SETTLE_S,
    RETRY_INTERVAL_S,
)

if TYPE_CHECKING:
    from .pool import Pool


@dataclass(frozen=True)
class Handoff:
    ns: int  # from just before A's release() to B's acquire() returning
    release_ns: int  # A's release() call alone (a round trip from an idle client)
    idle_evalsha_ns: int  # A's EVALSHA after HANDOFF_SETTLE_S idle, just before this handoff
    attempts: int  # acquire script runs of B's acquire (2 = queued once, then woken)
    released: bool


# -- in a worker ------------------------------------------------------------------------------


def idle_evalsha(call: Callable[[], object]) -> int:
    """One EVALSHA after HANDOFF_SETTLE_S idle, as A's release comes after its idle wait."""
    time.sleep(HANDOFF_SETTLE_S)
    started = time.monotonic_ns()
    call()
    return time.monotonic_ns() - started


def hold(sem: CountingSemaphore, name: str, token: str) -> Lease:
    """A takes the only permit (never waits)."""
    return sem.acquire(Holder(name, token), timeout=0, token=token)


def wait(sem: CountingSemaphore, name: str, token: str) -> tuple[int, int]:
    """B waits for the permit: when it was granted, and the acquire script runs it took."""
    before = sem.attempts
    lease = sem.acquire(Holder(name, token), timeout=ACQUIRE_TIMEOUT_S, token=token)
    granted_ns = time.monotonic_ns()
    sem.release(lease)
    return granted_ns, sem.attempts - before


def release(sem: CountingSemaphore, lease: Lease) -> tuple[int, int, bool]:
    """A releases: when it started, when it returned, and what release() answered."""
    release_ns = time.monotonic_ns()
    released = sem.release(lease)
    return release_ns, time.monotonic_ns(), released


# -- in the parent ----------------------------------------------------------------------------


def measure(pool: Pool, client: redis.Redis, prefix: str, count: int) -> list[Handoff]:
    """A (worker 0) holds the only permit, B (worker 1) waits for it; A releases."""
    queue_key = Keys(prefix).sem_queue
    found: list[Handoff] = []
    for worker in (0, 1):
        pool.call(worker, "open", (prefix, 1, RETRY_INTERVAL_S))
    try:
        for i in range(count):
            idle_evalsha_ns = pool.call(0, "idle_evalsha")
            pool.call(0, "hold", f"a{i}")
            pool.send(1, "wait", f"b{i}")
            _wait_queued(client, queue_key)
            time.sleep(HANDOFF_SETTLE_S)
            release_ns, released_ns, released = pool.call(0, "release")
            granted_ns, attempts = pool.recv(1, ACQUIRE_TIMEOUT_S + CALL_TIMEOUT_S)
            found.append(
                Handoff(
                    granted_ns - release_ns,
                    released_ns - release_ns,
                    idle_evalsha_ns,
                    attempts,
                    released,
                )
            )
    finally:
        for worker in (0, 1):
            pool.call(worker, "close")
    return found


def _wait_queued(client: redis.Redis, queue_key: str) -> None:
    deadline = time.monotonic() + HANDOFF_CHANNEL_WAIT_S
    while client.zcard(queue_key) < 1:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the waiter never queued within {HANDOFF_CHANNEL_WAIT_S} s")
        time.sleep(0.001)
