"""The global concurrency cap: a leased, owned, fenced, FIFO counting semaphore in Redis.

Every worker of every host shares one cap. The state lives in the `sem_*` keys of one namespace
(see keys.py) and changes only inside the Lua scripts of lua/sem_*.lua, which take the time
from Redis `TIME` (never a client's clock):

- holders: owner token -> lease end (ms); a holder that stops renewing loses its permit when
  its lease ends, so a dead worker gives its permits back by itself;
- FIFO queue of waiting tokens with a liveness deadline each, so a waiter that died without
  leaving is purged and cannot block the head of the queue;
- a fencing token, INCR'd in the same script as each grant, for resources that can check it.

Waiting does not poll. A script that frees permits (release, set_limit, a waiter giving up, a
purge of expired holders) publishes the tokens next in line on `keys.sem_channel`; the one
listener of each RedisSemaphore (on the process's RedisSubscriber) wakes the local threads
waiting with those tokens. Wake-ups can be lost (pub/sub forgets what it published while a
subscriber was away, and a lease that simply ends publishes nothing), so every waiter also
re-runs the acquire script at least every `retry_interval_s`: the safety net, not the mechanism.

Guarantees and their limits:

- With a single Redis primary the cap is exact: scripts run atomically, so no more than the
  limit in force at grant time hold a permit (holders kept over a lowered limit excepted).
- Asynchronous replication: after a failover the new primary may not have the latest grants,
  and a restart without persistence forgets every holder. Until the leases of the forgotten
  holders would have ended (at most `lease_ttl_s`), the cap can be exceeded by up to the number
  of forgotten holders. Their owners find out at their next renew (it returns False).
- A grant whose reply is lost (the connection dropped after the script ran, and the client's
  own retries failed too) holds its permit until its lease ends, since nobody renews it. An
  acquire retried with the same token simply gets that permit back.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from taskmon.ports import (
    BackendUnavailable,
    Holder,
    HolderInfo,
    Lease,
    PermitTimeout,
    check_acquire,
    check_limit,
)
from taskmon.redis.errors import unavailable_as
from taskmon.redis.keys import Keys
from taskmon.redis.scripts import ScriptKeys, ScriptSet
from taskmon.redis.subscriber import Listener, RedisSubscriber

log = logging.getLogger(__name__)

# The keys each script takes, in KEYS order, as names of Keys properties. The header of each
# lua/<script>.lua lists the same names (tests/unit/test_lua_scripts.py checks it).
SCRIPT_KEYS: ScriptKeys = {
    "sem_acquire": (
        "sem_holders",
        "sem_info",
        "sem_queue",
        "sem_waiters",
        "sem_limit",
        "sem_fencing",
        "sem_ticket",
    ),
    "sem_release": ("sem_holders", "sem_info", "sem_queue", "sem_waiters", "sem_limit"),
    "sem_renew": ("sem_holders", "sem_info", "sem_queue", "sem_limit"),
    "sem_set_limit": ("sem_holders", "sem_info", "sem_queue", "sem_waiters", "sem_limit"),
    "sem_leave": ("sem_holders", "sem_info", "sem_queue", "sem_waiters", "sem_limit"),
    "sem_reclaim": ("sem_holders", "sem_info", "sem_queue", "sem_waiters", "sem_fencing"),
    "sem_holders": ("sem_holders", "sem_info"),
    "sem_in_use": ("sem_holders",),
}

# A waiter that has not re-run the acquire script for this many retry intervals is taken for
# dead and leaves the queue.
WAITER_TTL_RETRIES = 3

_CAP_UNCHECKED = "The cap cannot be checked meanwhile; retry the task later"


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one run of the acquire script answered."""

    granted: bool
    fencing: int = 0
    holder: Holder | None = None
    rank: int = 0  # 0-based position in the queue, when not granted
    free: int = 0  # free permits when the script ran, when not granted


class RedisSemaphore:
    """The Semaphore port on Redis: one cap for every worker that shares the namespace.

    Public methods check their arguments and keep the local waiters; the `do_*` methods run
    one script each. Every Redis failure surfaces as BackendUnavailable (connection refused or
    reset, socket timeout, a replica that refuses writes, or an instance out of memory). An
    acquire never waits longer than its timeout plus the Redis calls in flight at its
    deadline: the last attempt and, only when that attempt was answered, leaving the queue;
    each call is bounded by connection.call_budget_s.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        default_limit: int,
        lease_ttl_s: float,
        subscriber: RedisSubscriber,
        retry_interval_s: float = 1.0,
        waiter_ttl_s: float | None = None,
    ) -> None:
        """Register the scripts and the wake-up listener.

        `client` must decode responses (decode_responses=True), as make_client's clients do.
        `retry_interval_s` bounds how long a waiter sleeps without a wake-up; a waiter that
        misses WAITER_TTL_RETRIES of its retries in a row is purged from the queue;
        `waiter_ttl_s` overrides that window (size it for retries that are slow themselves:
        a waiter purged while alive only loses its place, never the cap).
        If Redis does not confirm the wake-up subscription now, the semaphore still works:
        waiters retry every `retry_interval_s`, and a background thread subscribes again at
        that pace until Redis answers (or the semaphore is closed).
        """
        check_limit(default_limit, "default_limit")
        if not math.isfinite(lease_ttl_s) or lease_ttl_s < 0.001:
            raise ValueError("lease_ttl_s must be at least 0.001 s")
        if not math.isfinite(retry_interval_s) or retry_interval_s < 0.001:
            raise ValueError("retry_interval_s must be at least 0.001 s")
        self.lease_ttl_s = lease_ttl_s
        self.retry_interval_s = retry_interval_s
        self._client = client
        self._keys = keys
        self._default_limit = default_limit
        self._lease_ms = max(1, round(lease_ttl_s * 1000))
        waiter_ttl = (
            waiter_ttl_s if waiter_ttl_s is not None else WAITER_TTL_RETRIES * retry_interval_s
        )
        self._waiter_ttl_ms = max(1, math.ceil(waiter_ttl * 1000))
        self._scripts = ScriptSet(client, SCRIPT_KEYS)
        # Built once: every attempt of every waiter passes the same names.
        self._script_keys: dict[str, Sequence[str]] = {
            name: [getattr(keys, key) for key in names] for name, names in SCRIPT_KEYS.items()
        }
        self._lock = threading.Lock()
        self._waiting: dict[str, set[threading.Event]] = {}
        self._closed = False
        self._stopped = threading.Event()  # set with _closed, for the re-subscribing thread
        self._subscriber = subscriber
        self._listener: Listener | None = None
        # Pub/sub forgets what it published while the subscriber was away: after a
        # reconnection every local waiter re-runs the acquire script.
        subscriber.on_reconnect(self._wake_all)
        if not self._listen():
            threading.Thread(
                target=self._listen_until_confirmed, name="taskmon-semaphore-listen", daemon=True
            ).start()

    # -- the port --------------------------------------------------------------------------

    def acquire(self, holder: Holder, *, timeout: float, token: str | None = None) -> Lease:
        """Wait up to `timeout` seconds for a permit, first come first served across workers.

        A repeated acquire with the token of a permit still held returns that permit (same
        fencing, lease not extended); this makes a retried call safe, so pass a token that
        identifies the work (the service uses the task id).

        Raises PermitTimeout when no permit came in time or the semaphore is closed, and
        BackendUnavailable when Redis does not answer (the waiter's queue entry is then
        purged by its liveness deadline). A timeout of 0 tries exactly once.
        """
        check_acquire(token, timeout)
        token = token or uuid.uuid4().hex
        timeout = max(0.0, timeout)
        deadline = time.monotonic() + timeout
        woken = threading.Event()
        with self._lock:
            if self._closed:
                raise PermitTimeout("semaphore closed: the worker is shutting down")
            self._waiting.setdefault(token, set()).add(woken)
        try:
            while True:
                woken.clear()
                # Checked after clear(): a close() from now on leaves `woken` set.
                if self._closed:
                    self._give_up(token)
                    raise PermitTimeout("semaphore closed: the worker is shutting down")
                attempt = self.do_acquire(token, holder)
                if attempt.granted:
                    return self._lease(token, attempt.fencing, attempt.holder or holder)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._give_up(token)
                    raise PermitTimeout(
                        f"no permit within {timeout:.3g} s (position {attempt.rank + 1} in the "
                        f"queue, {max(0, attempt.free)} permits free)"
                    )
                woken.wait(min(remaining, self.retry_interval_s))
        finally:
            with self._lock:
                events = self._waiting.get(token)
                if events is not None:
                    events.discard(woken)
                    if not events:
                        del self._waiting[token]

    def renew(self, lease: Lease) -> bool:
        """Extend the lease by a full TTL from now (Redis time).

        False when this grant no longer holds the permit (its lease ended, or it was released,
        or the token was granted again under another fencing). Raises BackendUnavailable when
        Redis does not answer: the lease keeps its remaining time, so retry soon.
        """
        return self.do_renew(lease.token, lease.fencing)

    def release(self, lease: Lease) -> bool:
        """Give the permit back and wake the next in line.

        False, and nothing counted, when this grant no longer held the permit (its lease
        ended first). A release whose reply was lost and that the client retried also answers
        False the second time, although the permit was released once. Raises
        BackendUnavailable when Redis does not answer: the permit then returns when its lease
        ends.
        """
        return self.do_release(lease.token, lease.fencing)

    def reclaim(self, holder: Holder, token: str) -> Lease:
        """Register a permit this worker kept while Redis was away, over the limit if need be.

        The failover layer calls it for every synthesis still running before it admits new
        work through Redis again. A grant still live is kept (lease extended); otherwise a
        new one is made, with a new fencing token. Raises BackendUnavailable when Redis does
        not answer.
        """
        if not token:
            raise ValueError("token must be a non-empty string")
        fencing, _ = self.do_reclaim(token, holder)
        return self._lease(token, fencing, holder)

    def limit(self) -> int:
        """The cap in force (the configured default until someone sets one).

        Raises BackendUnavailable when Redis does not answer.
        """
        with unavailable_as("the semaphore read the limit", _CAP_UNCHECKED):
            raw = self._client.get(self._keys.sem_limit)
        return self._default_limit if raw is None else int(raw)

    def restore_limit(self, limit: int) -> bool:
        """Put back a cap Redis forgot (restarted empty), unless someone set one since.

        True when written. Raises BackendUnavailable when Redis does not answer.
        """
        check_limit(limit)
        with unavailable_as("the semaphore restored the limit", _CAP_UNCHECKED):
            return bool(self._client.set(self._keys.sem_limit, limit, nx=True))

    def set_limit(self, limit: int) -> None:
        """Change the cap for every worker, live, and wake the waiters it lets in.

        Holders over a lowered cap keep their permits until they release them. Raises
        BackendUnavailable when Redis does not answer; the new cap may or may not be in force
        then (the reply can be lost after the write), and calling again is safe.
        """
        check_limit(limit)
        self.do_set_limit(limit)

    def in_use(self) -> int:
        """Permits held now under unexpired leases (Redis time). BackendUnavailable on failure."""
        return int(self._run("sem_in_use", "count the permits in use"))

    def holders(self) -> list[HolderInfo]:
        """Who holds a permit now, in grant order. BackendUnavailable on failure."""
        return self.do_holders()

    def close(self) -> None:
        """Wake every local waiter with PermitTimeout; later acquires fail at once.

        Held permits stay: their owners release them (or their leases end). Idempotent.
        """
        with self._lock:
            self._closed = True
            listener, self._listener = self._listener, None
        self._stopped.set()
        self._wake_all()
        self._subscriber.remove_reconnect_hook(self._wake_all)
        if listener is not None:
            self._subscriber.unlisten(listener)

    # -- one script each ---------------------------------------------------------------------

    def do_acquire(self, token: str, holder: Holder) -> Attempt:
        """Run the acquire script once: grant, or enqueue (keep the place) and refresh liveness."""
        reply = self._run(
            "sem_acquire",
            "acquire a permit",
            token,
            holder.worker,
            holder.task_id,
            self._lease_ms,
            self._waiter_ttl_ms,
            self._default_limit,
            self._keys.sem_channel,
        )
        if int(reply[0]) == 1:
            return Attempt(True, fencing=int(reply[1]), holder=Holder(str(reply[2]), str(reply[3])))
        return Attempt(False, rank=int(reply[1]), free=int(reply[2]))

    def do_release(self, token: str, fencing: int) -> bool:
        reply = self._run(
            "sem_release",
            "release a permit",
            token,
            fencing,
            self._default_limit,
            self._keys.sem_channel,
        )
        return int(reply) == 1

    def do_renew(self, token: str, fencing: int) -> bool:
        reply = self._run(
            "sem_renew",
            "renew a permit",
            token,
            fencing,
            self._lease_ms,
            self._default_limit,
            self._keys.sem_channel,
        )
        return int(reply) == 1

    def do_reclaim(self, token: str, holder: Holder) -> tuple[int, bool]:
        """Returns the grant's fencing token, and whether it was granted anew."""
        reply = self._run(
            "sem_reclaim", "re-register a permit", token, holder.worker, holder.task_id,
            self._lease_ms,
        )  # fmt: skip
        return int(reply[0]), int(reply[1]) == 1

    def do_set_limit(self, limit: int) -> int:
        """Returns the free permits under the new limit (negative when holders exceed it)."""
        return int(self._run("sem_set_limit", "set the limit", limit, self._keys.sem_channel))

    def do_leave(self, token: str) -> bool:
        """Take `token` out of the queue and wake the next in line. True when it was queued."""
        reply = self._run(
            "sem_leave",
            "leave the permit queue",
            token,
            self._default_limit,
            self._keys.sem_channel,
        )
        return int(reply) == 1

    def do_holders(self) -> list[HolderInfo]:
        reply = self._run("sem_holders", "read the permit holders")
        now_ms = int(reply[0])
        found: list[HolderInfo] = []
        for i in range(1, len(reply), 3):
            token, lease_end_ms, raw = str(reply[i]), int(reply[i + 1]), reply[i + 2]
            info: dict[str, Any] = json.loads(raw) if raw else {}
            found.append(
                HolderInfo(
                    Holder(str(info.get("worker", "")), str(info.get("task_id", ""))),
                    token,
                    int(info.get("fencing", 0)),
                    (lease_end_ms - now_ms) / 1000.0,
                )
            )
        found.sort(key=lambda h: h.fencing)
        return found

    # -- internals -------------------------------------------------------------------------

    def _lease(self, token: str, fencing: int, holder: Holder) -> Lease:
        return Lease(token, fencing, holder, self.lease_ttl_s, self)

    def _give_up(self, token: str) -> None:
        """Leave the queue; if Redis fails now, the liveness deadline removes the entry later."""
        try:
            self.do_leave(token)
        except BackendUnavailable as exc:
            log.warning(
                "could not leave the permit queue (%s); the entry of %s is purged within %.3g s",
                exc,
                token,
                self._waiter_ttl_ms / 1000,
            )

    def _run(self, name: str, what: str, *args: str | int | float) -> Any:
        with unavailable_as(f"the semaphore tried to {what}", _CAP_UNCHECKED):
            return self._scripts[name](keys=self._script_keys[name], args=args)

    def _listen(self) -> bool:
        """Subscribe to wake-ups. False (and logged) when Redis did not confirm in time."""
        try:
            listener = self._subscriber.listen(self._keys.sem_channel, self._on_wake)
        except BackendUnavailable as exc:
            log.warning(
                "semaphore wake-ups are not subscribed (%s); waiters retry every %.3g s, and "
                "subscribing is retried at that pace",
                exc,
                self.retry_interval_s,
            )
            return False
        with self._lock:
            closed = self._closed
            if not closed:
                self._listener = listener
        if closed:
            self._subscriber.unlisten(listener)
        else:
            self._wake_all()  # a wake-up published before now may have been missed
        return True

    def _listen_until_confirmed(self) -> None:
        while not self._stopped.wait(self.retry_interval_s):
            if self._listen():
                return

    def _on_wake(self, data: str) -> None:
        """Subscriber thread: wake the local waiters whose tokens were published."""
        try:
            tokens = json.loads(data)
        except ValueError:
            tokens = None
        if not isinstance(tokens, list):
            log.warning("unexpected semaphore wake-up %r; waking every waiter", data[:200])
            self._wake_all()
            return
        with self._lock:
            for token in tokens:
                for event in self._waiting.get(str(token), ()):
                    event.set()

    def _wake_all(self) -> None:
        with self._lock:
            events = [event for events in self._waiting.values() for event in events]
        for event in events:
            event.set()
