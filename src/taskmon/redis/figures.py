"""The global figures /metrics exports, read from Redis at scrape time (the FigureSource port).

`read()` is one read-only script (lua/metrics_read.lua): counters, the queued index's oldest
entry, unexpired leases, live waiters and live workers, each O(1) or O(log N), at one instant by
the Redis clock. Every worker reads the same keys, so every worker answers the same figures.

`keyspace()` counts the keys of the namespace. Redis has no per-prefix count outside Cluster
(CLUSTER COUNTKEYSINSLOT would do it: the namespace is one hash slot), so it is a SCAN with a
MATCH of the namespace and a COUNT hint: a full pass visits every key of the database, not only
ours, in about `keys in the database / COUNT` round trips (about 1 us a key on the server).
The pass and its result live in Redis (`{p}:metrics:keyspace`): the fleet makes one pass per
`cache_s` however many workers are scraped, every worker reports the same completed pass, and
a pass longer than one scrape's `budget_s` goes on where the last scrape left it. SCAN returns
every key present for the whole pass at least once, and may return one twice while Redis
resizes its table: the count can then be a little high, never low (a set to drop the copies
would cost memory in proportion to the namespace). Keys created or removed during a pass may
or may not be counted.
"""

from __future__ import annotations

import time
from typing import Any, cast

import redis

from taskmon.domain import StateCounts, TaskState
from taskmon.ports import GlobalFigures, KeyspaceFigures
from taskmon.redis.diagnosis import refused_by_acl
from taskmon.redis.errors import unavailable_as
from taskmon.redis.keys import Keys
from taskmon.redis.scripts import ScriptKeys, ScriptSet

# The keys each script takes, in KEYS order, as names of Keys attributes (see scripts.py).
SCRIPT_KEYS: ScriptKeys = {
    "metrics_read": (
        "counters", "state_index", "workers", "sem_holders", "sem_waiters", "sem_state",
    ),
    "metrics_keyspace_store": ("metrics_keyspace",),
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
        self._cache_s = cache_s
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
        """The last complete pass over the namespace, shared by every worker: younger than
        `cache_s`, or (older) while the next pass is under way. None before a first pass
        completed.

        A scrape that finds the last pass old advances the next one by up to `budget_s` of
        SCAN from where the previous scrape left it (the cursor and the partial counts are
        stored), so a keyspace of any size completes a pass over a few scrapes, and no
        scrape takes much longer than `budget_s`. The cursor and the partial counts are
        written together as absolute values, never incremented, so two workers stepping the
        same pass at once never count a key twice: a step is stored only if the cursor it
        began from is still the stored one (lua/metrics_keyspace_store.lua), so the step that
        loses the race is dropped and the pass never goes back. No MULTI or WATCH: the ACL
        user needs SCAN and nothing more for this.
        """
        try:
            name = self._keys.metrics_keyspace
            with unavailable_as("counting the namespace's keys for /metrics"):
                with self._client.pipeline(transaction=False) as pipe:
                    pipe.hgetall(name)
                    pipe.time()
                    stored_reply, time_reply = pipe.execute()
                stored = cast("dict[str, str]", stored_reply)
                now_ms = _now_ms(time_reply)
                last = _last_pass(stored, now_ms)
                if last is not None and last.age_s < self._cache_s:
                    return last
                began_at = stored.get("cursor", "0")
                fields = self._advance(stored, now_ms)
                pairs = [str(item) for field_value in fields.items() for item in field_value]
                self._scripts["metrics_keyspace_store"](keys=[name], args=[began_at, *pairs])
                stored = cast("dict[str, str]", self._client.hgetall(name))
            return _last_pass(stored, now_ms)
        except redis.ResponseError as exc:
            if not refused_by_acl(exc):
                raise
            # An ACL user without SCAN (reported once, by unavailable_as): the key figures are
            # left out, the rest of the scrape stands.
            return None

    def _advance(self, stored: dict[str, str], now_ms: int) -> dict[str, int]:
        """SCAN on from the stored cursor for up to `budget_s`: the fields to store (the
        partial counts and the cursor; the complete counts too when the pass ended)."""
        # A pass under way has a cursor other than 0: SCAN answers 0 only at its end.
        going = stored.get("cursor", "0") != "0"
        counted = {field: int(stored.get(field, 0)) if going else 0 for field in _PARTIAL}
        cursor = int(stored["cursor"]) if going else 0
        task_prefix = self._keys.task_key_prefix
        idem_prefix = self._keys.idempotency_key_prefix
        deadline = time.monotonic() + self._budget_s
        while True:
            cursor, names = self._client.scan(
                cursor, match=self._keys.namespace_pattern, count=self._scan_count
            )
            for key in cast("list[str]", names):
                counted["scan_keys"] += 1
                counted["scan_tasks"] += key.startswith(task_prefix)
                counted["scan_idempotency"] += key.startswith(idem_prefix)
            cursor = int(cursor)
            if cursor == 0:
                done = {field.removeprefix("scan_"): value for field, value in counted.items()}
                return {**counted, **done, "cursor": 0, "at_ms": now_ms}
            if time.monotonic() >= deadline:
                return {**counted, "cursor": cursor}


_PARTIAL = ("scan_keys", "scan_tasks", "scan_idempotency")


def _now_ms(reply: Any) -> int:
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


def _last_pass(stored: dict[str, str], now_ms: int) -> KeyspaceFigures | None:
    if not stored.keys() >= {"keys", "tasks", "idempotency", "at_ms"}:
        return None
    return KeyspaceFigures(
        keys=int(stored["keys"]),
        tasks=int(stored["tasks"]),
        idempotency_keys=int(stored["idempotency"]),
        age_s=max(0.0, (now_ms - int(stored["at_ms"])) / 1000),
    )
