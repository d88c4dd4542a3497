"""The global figures /metrics exports, read from Redis at scrape time (the FigureSource port).

`read()` is one read-only script (lua/metrics_read.lua): counters, the queued index's oldest
entry, unexpired leases, live waiters and live workers, each O(1) or O(log N), at one instant by
the Redis clock. Every worker reads the same keys, so every worker answers the same figures.

`keyspace()` counts the keys of the namespace. Redis has no per-prefix count outside Cluster
(CLUSTER COUNTKEYSINSLOT would do it: the namespace is one hash slot), so it is a SCAN with a
MATCH of the namespace and a COUNT hint: a full pass visits every key of the database, not only
ours, in about `keys in the database / COUNT` round trips. Its result is cached in Redis
(`{p}:metrics:keyspace`) for `cache_s`, so the fleet pays one pass per `cache_s` however many
workers are scraped, and every worker reports the same pass. A pass that does not finish
within `budget_s` reports nothing (None) rather than a partial count. SCAN returns every key
present for the whole pass at least once, and may return one twice while Redis resizes its
table: the count can then be a little high, never low (a set to drop the copies would cost
the worker memory in proportion to the namespace).
"""

from __future__ import annotations

import time
from typing import Any, cast

import redis

from taskmon.domain import StateCounts, TaskState
from taskmon.ports import GlobalFigures, KeyspaceFigures
from taskmon.redis.errors import unavailable_as
from taskmon.redis.keys import Keys
from taskmon.redis.scripts import ScriptKeys, ScriptSet

# The keys each script takes, in KEYS order, as names of Keys attributes (see scripts.py).
SCRIPT_KEYS: ScriptKeys = {
    "metrics_read": (
        "counters", "state_index", "workers", "sem_holders", "sem_waiters", "sem_state",
    ),
}  # fmt: skip


class RedisFigures:
    """FigureSource on Redis. Every method raises BackendUnavailable when Redis does not
    answer within the client's call budget (a SCAN pass: each of its calls)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        scan_count: int = 1000,
        budget_s: float = 0.5,
        cache_s: float = 30.0,
    ) -> None:
        self._client = client
        self._keys = keys
        self._scan_count = scan_count
        self._budget_s = budget_s
        self._cache_ms = max(1, round(cache_s * 1000))
        self._scripts = ScriptSet(client, SCRIPT_KEYS)
        self._read_keys = [
            keys.counters,
            keys.state_index(TaskState.QUEUED),
            keys.workers,
            keys.sem_holders,
            keys.sem_waiters,
            keys.sem_state,
        ]

    def read(self) -> GlobalFigures:
        with unavailable_as("reading the global figures for /metrics"):
            reply = cast("list[Any]", self._scripts["metrics_read"](keys=self._read_keys))
        now_ms, queued, running, done, failed, oldest, alive, in_use, waiters, limit = reply
        counts = StateCounts(*(int(value or 0) for value in (queued, running, done, failed)))
        # Entry times are the creating worker's clock, `now` the Redis clock: a skew between
        # them shows here, so the age is never taken below zero.
        age = None if oldest in ("", None) else max(0.0, int(now_ms) / 1000 - float(oldest))
        return GlobalFigures(
            counts=counts,
            in_use=int(in_use),
            limit=int(limit) if limit not in ("", None) else None,
            waiters=int(waiters),
            workers_alive=int(alive),
            oldest_queued_age_s=age,
        )

    def keyspace(self) -> KeyspaceFigures | None:
        """The last complete pass (cached), or a new one when the cache expired; None when
        the pass did not finish within the budget."""
        with unavailable_as("reading the cached key counts for /metrics"):
            pipe = self._client.pipeline(transaction=False)
            pipe.hgetall(self._keys.metrics_keyspace)
            pipe.time()
            cached, (seconds, micros) = pipe.execute()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        if cached.keys() >= {"keys", "tasks", "idempotency", "at_ms"}:
            return _figures(cached, now_ms)
        counted = self._scan()
        if counted is None:
            return None
        fields: dict[str, str | int] = {**counted, "at_ms": now_ms}
        with unavailable_as("caching the key counts for /metrics"):
            pipe = self._client.pipeline(transaction=True)
            pipe.hset(self._keys.metrics_keyspace, mapping=cast("dict[Any, Any]", fields))
            pipe.pexpire(self._keys.metrics_keyspace, self._cache_ms)
            pipe.execute()
        return _figures(fields, now_ms)

    def _scan(self) -> dict[str, int] | None:
        task_prefix = self._keys.task_key_prefix
        idem_prefix = self._keys.idempotency_key_prefix
        counted = {"keys": 0, "tasks": 0, "idempotency": 0}
        deadline = time.monotonic() + self._budget_s
        cursor: int = 0
        while True:
            with unavailable_as("counting the namespace's keys for /metrics"):
                cursor, names = self._client.scan(
                    cursor, match=self._keys.namespace_pattern, count=self._scan_count
                )
            for name in cast("list[str]", names):
                counted["keys"] += 1
                counted["tasks"] += name.startswith(task_prefix)
                counted["idempotency"] += name.startswith(idem_prefix)
            if int(cursor) == 0:
                return counted
            if time.monotonic() >= deadline:
                return None


def _figures(fields: dict[str, Any], now_ms: int) -> KeyspaceFigures:
    return KeyspaceFigures(
        keys=int(fields["keys"]),
        tasks=int(fields["tasks"]),
        idempotency_keys=int(fields["idempotency"]),
        age_s=max(0.0, (now_ms - int(fields["at_ms"])) / 1000),
    )
