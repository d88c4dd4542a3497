"""The parent side of the handoff: worker 0 (A) holds the only permit, worker 1 (B) waits.

taskmon's waiter is seen queued in Redis before A releases; a peer's waiter cannot be seen
the same way, so B is given PEER_SETTLE_S to 3 x PEER_SETTLE_S (at random: the release then
falls at any phase of a polling peer's interval) to make its first try and park or poll.
"""

from __future__ import annotations

import random
import time

import redis

from taskmon.redis.keys import Keys

from .handoff import Handoff
from .params import (
    ACQUIRE_TIMEOUT_S,
    CALL_TIMEOUT_S,
    HANDOFF_CHANNEL_WAIT_S,
    HANDOFF_SETTLE_S,
    PEER_SETTLE_S,
    RETRY_INTERVAL_S,
)
from .pool import Pool
from .subjects import TASKMON


def measure(
    pool: Pool, client: redis.Redis, subject: str, prefix: str, count: int
) -> list[Handoff]:
    """A (worker 0) holds the only permit, B (worker 1) waits for it; A releases."""
    queue_key = Keys(prefix).sem_queue
    found: list[Handoff] = []
    for worker in (0, 1):
        pool.call(worker, "open", (subject, prefix, 1, RETRY_INTERVAL_S))
    try:
        for i in range(count):
            idle_evalsha_ns = pool.call(0, "idle_evalsha")
            pool.call(0, "hold", f"a{i}")
            pool.send(1, "wait", f"b{i}")
            if subject == TASKMON:
                _wait_queued(client, queue_key)
                time.sleep(HANDOFF_SETTLE_S)
            else:  # a random phase against a polling peer's interval, as a real release has
                time.sleep(PEER_SETTLE_S * (1 + random.random() * 2))  # noqa: S311
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
