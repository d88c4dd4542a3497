"""The fair semaphore of *Redis in Action* (Carlson, section 6.3.2), written here from the
book's description, as a peer: it has no PyPI package.

Three keys per semaphore: a sorted set of holders scored by the client's clock (for
timeouts), a sorted set of holders scored by a counter (for fairness), and the counter. An
acquire, in two MULTI/EXEC pipelines: drop holders older than the timeout from the first set
and (by ZINTERSTORE with weight 0) from the second; take a counter value; add the identifier
to both sets; it holds a permit when its rank by counter is below the limit, else it removes
itself. A release removes the identifier from both sets. Waiting is the caller's loop: the
book gives no wake-up, so a blocked client polls.
"""

from __future__ import annotations

import time

import redis


class FairSemaphore:
    """try_acquire answers the identifier when it holds a permit, else None; never waits."""

    def __init__(self, client: redis.Redis, name: str, limit: int, timeout_s: float) -> None:
        self.client = client
        self.limit = limit
        self.timeout_s = timeout_s
        self.holders = f"{name}:fair"  # identifier -> client time of the acquire
        self.owners = f"{name}:fair:owner"  # identifier -> counter value of the acquire
        self.counter = f"{name}:fair:counter"

    def try_acquire(self, identifier: str) -> str | None:
        now = time.time()
        pipe = self.client.pipeline(transaction=True)
        pipe.zremrangebyscore(self.holders, "-inf", now - self.timeout_s)
        pipe.zinterstore(self.owners, {self.owners: 1, self.holders: 0})
        pipe.incr(self.counter)
        counter = pipe.execute()[-1]
        pipe.zadd(self.holders, {identifier: now})
        pipe.zadd(self.owners, {identifier: counter})
        pipe.zrank(self.owners, identifier)
        if pipe.execute()[-1] < self.limit:
            return identifier
        pipe.zrem(self.holders, identifier)
        pipe.zrem(self.owners, identifier)
        pipe.execute()
        return None

    def release(self, identifier: str) -> bool:
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self.holders, identifier)
        pipe.zrem(self.owners, identifier)
        return bool(pipe.execute()[0])
