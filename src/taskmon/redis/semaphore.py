"""The global concurrency cap: a leased, owned, fenced, FIFO counting semaphore in Redis.

Every worker of every host shares one cap. The state lives in the `sem_*` keys of one namespace
(see keys.py) and changes only inside the Lua scripts of lua/sem_*.lua (their shared functions
in lua/lib/sem_lib.lua), which take the time from Redis `TIME` (never a client's clock):

- holders: owner token -> lease end (ms); a holder that stops renewing loses its permit when
  its lease ends, so a dead worker gives its permits back by itself;
- a FIFO queue of waiting tokens with a liveness deadline each, so a waiter that died without
  leaving is purged and cannot block the head of the queue;
- one state hash: the limit (shared by all: the newest worker's configured default, unless
  an operator set one live), the fencing counter (incremented with each grant, for resources
  that can check it) and the queue's ticket counter.

The fast path: with nobody queued and a permit free, the acquire script grants at once, and
this side builds nothing for waiting (no event, no registration). Otherwise the token queues,
and the scripts that free permits (release, renew when leases ended, leave, set_limit, and an
acquire that finds permits free) grant them to the head of the queue themselves, inside the
same script: the grant is stored, then announced on the grants channel to the waiter's
process, whose one listener (on the process's RedisSubscriber) hands it to the waiting thread
with no second acquire. An announcement can be lost (pub/sub forgets what it published while a
subscriber was away): the grant stays stored, and the waiter, which re-runs the acquire script
at least every `retry_interval_s`, finds it there. A grant handed over has a short first lease
(`grant_ttl_s`), so one made to a waiter that died meanwhile holds its permit only that long.

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
    WaiterInfo,
    check_acquire,
    check_limit,
)
from taskmon.redis.errors import unavailable_as
from taskmon.redis.grant_inbox import GrantInbox
from taskmon.redis.keys import Keys
from taskmon.redis.scripts import ScriptKeys, ScriptSet
from taskmon.redis.subscriber import RedisSubscriber

log = logging.getLogger(__name__)

# The keys each script takes, in KEYS order, as names of Keys properties. The header of each
# lua/<script>.lua lists the same names (tests/unit/test_lua_scripts.py checks it).
_SEM_KEYS = ("sem_holders", "sem_info", "sem_queue", "sem_waiters", "sem_inboxes", "sem_state")
SCRIPT_KEYS: ScriptKeys = {
    "sem_acquire": _SEM_KEYS,
    "sem_release": _SEM_KEYS,
    "sem_renew": _SEM_KEYS,
    "sem_set_limit": _SEM_KEYS,
    "sem_leave": _SEM_KEYS,
    "sem_reclaim": _SEM_KEYS,
    "sem_holders": ("sem_holders", "sem_info"),
    "sem_in_use": ("sem_holders",),
    "sem_waiting": ("sem_queue", "sem_waiters", "sem_inboxes"),
    "sem_upgrade": ("sem_state", "sem_legacy_fencing", "sem_legacy_limit"),
}
_RENEW_BATCH = 1000  # leases per renew script (Lua unpacks at most a few thousand values)

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
    lease_s: float = 0.0  # the grant's lease from now, when granted
    rank: int = 0  # 0-based position in the queue, when not granted
    free: int = 0  # free permits when the script ran, when not granted
    no_limit: bool = False  # no limit stored (Redis forgot it): store the default, call again


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
        """Register the scripts and subscribe to the grants announced to this process.

        `client` must decode responses (decode_responses=True), as make_client's clients do.
        `default_limit` is stored by `configure_limit` at start-up (the composition root calls
        it: the newest configuration is the cap for all, unless an operator set one live), or
        by the first acquire that finds no limit stored (Redis forgot it); never per call.
        `retry_interval_s` bounds how long a waiter sleeps without an announcement; a waiter
        that misses WAITER_TTL_RETRIES of its retries in a row is purged from the queue;
        `waiter_ttl_s` overrides that window (size it for retries that are slow themselves: a
        waiter purged while alive only loses its place, never the cap). If Redis does not
        answer now, the semaphore still works: waiters retry every `retry_interval_s`, and a
        background thread subscribes at that pace until Redis answers (or it is closed).
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
        # The last cap this worker read or wrote and whose it was (admin or config): what a
        # restore gives back to a Redis that forgot it, so an operator's cap survives.
        self._known_cap: tuple[int, str] = (default_limit, "config")
        self._lease_ms = max(1, round(lease_ttl_s * 1000))
        waiter_ttl = (
            waiter_ttl_s if waiter_ttl_s is not None else WAITER_TTL_RETRIES * retry_interval_s
        )
        self._waiter_ttl_ms = max(1, math.ceil(waiter_ttl * 1000))
        # A grant handed over to a waiter: long enough for a live one to learn of it (its
        # liveness window) and for the lease keeper to renew it (a third into it), short
        # enough that a dead one wastes little.
        self._grant_ms = min(self._lease_ms, max(self._waiter_ttl_ms, -(-self._lease_ms // 2)))
        self.grant_ttl_s = self._grant_ms / 1000
        self._scripts = ScriptSet(client, SCRIPT_KEYS)
        # Built once: every call of every waiter passes the same names and constants.
        self._script_keys: dict[str, Sequence[str]] = {
            name: [getattr(keys, key) for key in names] for name, names in SCRIPT_KEYS.items()
        }
        self._channel = keys.sem_channel
        self._inbox = GrantInbox(subscriber, self._channel, retry_interval_s)

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
        _check_fields(token or "", holder)
        inbox = self._inbox
        if inbox.closed:
            raise PermitTimeout("semaphore closed: the worker is shutting down")
        token = token or uuid.uuid4().hex
        timeout = max(0.0, timeout)
        deadline = time.monotonic() + timeout
        nonce = inbox.nonce()
        attempt = self._attempt(token, holder, nonce)
        if attempt.granted:
            return self._granted(token, attempt, holder)
        # Queued: only now is anything built for waiting.
        wait = inbox.wait_for(token, nonce)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining > 0 and not inbox.closed:
                    wait.event.wait(min(remaining, self.retry_interval_s))
                # Cleared before the grant is looked at: one announced from now on leaves
                # the event set, so it is seen at the next turn.
                wait.event.clear()
                if wait.grant is not None:
                    fencing, lease_s = wait.grant
                    return self._lease(token, fencing, holder, lease_s)
                if inbox.closed:
                    self._give_up(token, nonce)
                    raise PermitTimeout("semaphore closed: the worker is shutting down")
                if deadline - time.monotonic() <= 0:
                    self._give_up(token, nonce)
                    raise PermitTimeout(
                        f"no permit within {timeout:.3g} s (position {attempt.rank + 1} in the "
                        f"queue, {max(0, attempt.free)} permits free)"
                    )
                attempt = self._attempt(token, holder, nonce)
                if attempt.granted:
                    return self._granted(token, attempt, holder)
        finally:
            inbox.forget(token, wait)

    def renew(self, lease: Lease) -> bool:
        """Extend the lease by a full TTL from now (Redis time).

        False when this grant no longer holds the permit (its lease ended, or it was released,
        or the token was granted again under another fencing). Raises BackendUnavailable when
        Redis does not answer: the lease keeps its remaining time, so retry soon.
        """
        return self.do_renew([(lease.token, lease.fencing)])[0]

    def renew_all(self, leases: Sequence[Lease]) -> list[bool]:
        """`renew` for many leases in one call (one script run); the answers in order."""
        return self.do_renew([(lease.token, lease.fencing) for lease in leases]) if leases else []

    def release(self, lease: Lease) -> bool:
        """Give the permit back; the next in line is granted it in the same script.

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
        _check_fields(token, holder)
        fencing, _ = self.do_reclaim(token, holder)
        return self._lease(token, fencing, holder, self.lease_ttl_s)

    def limit(self) -> int:
        """The cap in force (while none is stored: the one the next acquire restores).

        Raises BackendUnavailable when Redis does not answer.
        """
        with unavailable_as("the semaphore read the limit", _CAP_UNCHECKED):
            raw, set_by = self._client.hmget(self._keys.sem_state, ["limit", "set_by"])
        if raw is None:
            return self._known_cap[0]  # what the next acquire restores
        self._known_cap = (int(raw), "admin" if set_by == "admin" else "config")
        return int(raw)

    def restore_limit(self) -> bool:
        """Give a Redis that forgot its cap (restarted empty) the last one this worker knew,
        as whose it was: an operator's stays an operator's, which no start-up overrides.
        Stores nothing when a cap is stored. True when written. Raises BackendUnavailable
        when Redis does not answer.

        The failover's write-back calls it, and so does the first acquire that finds no cap
        (which may come before the failover layer has noticed the restart). A worker that
        never read the cap restores its own configured default. The cap is known as of this
        worker's last read (the failover's health check reads it every second): a worker
        that restores before it has read a cap set on another worker moments earlier gives
        back the older one; the operator then sets it again.
        """
        limit, set_by = self._known_cap
        return self.do_set_limit(limit, f"restore-{set_by}")[2]

    def set_limit(self, limit: int) -> None:
        """Change the cap for every worker, live, and grant the waiters it lets in: an
        operator's change, kept over any worker's configured default from then on.

        Holders over a lowered cap keep their permits until they release them. Raises
        BackendUnavailable when Redis does not answer; the new cap may or may not be in force
        then (the reply can be lost after the write), and calling again is safe.
        """
        check_limit(limit)
        # Known once written: a refused write must not come back later as a restore (a reply
        # lost after the write is corrected by the next read, the health check's every second).
        self.do_set_limit(limit, "admin")
        self._known_cap = (limit, "admin")

    def configure_limit(self) -> int:
        """Store this worker's configured default as the cap for every worker, unless an
        operator set one live (`set_limit`); the cap in force.

        The composition root calls it at start-up, so the newest configuration applies to
        all and no worker keeps a cap of its own. An older version's fencing counter and
        operator-set cap, kept in keys of their own, are carried over first (`sem_upgrade`).
        Raises BackendUnavailable when Redis does not answer (the first acquire then stores
        the default if no cap is stored).
        """
        self._run("sem_upgrade", "carry an older version's semaphore state over")
        limit, _, stored = self.do_set_limit(self._default_limit, "config")
        self._known_cap = (limit, "config" if stored else "admin")
        return limit

    def in_use(self) -> int:
        """Permits held now under unexpired leases (Redis time). BackendUnavailable on failure."""
        return int(self._run("sem_in_use", "count the permits in use"))

    def holders(self) -> list[HolderInfo]:
        """Who holds a permit now, in grant order. BackendUnavailable on failure."""
        return self.do_holders()

    def waiters(self) -> list[WaiterInfo]:
        """Who waits for a permit now, in queue order (live waiters only; the queue keeps no
        time of arrival, so `waiting_s` is None). BackendUnavailable on failure."""
        reply = self._run("sem_waiting", "read the permit queue")
        found: list[WaiterInfo] = []
        for i in range(1, len(reply), 3):
            # inbox \t nonce \t grant_ms \t worker \t task_id
            fields = [*str(reply[i + 2] or "").split("\t"), "", "", "", "", ""]
            holder = Holder(fields[3], fields[4])
            found.append(WaiterInfo(holder, str(reply[i]), len(found) + 1))
        return found

    def revoke(self, token: str) -> HolderInfo | None:
        """Release the permit held under `token` whoever holds it, through the release script
        (so the head of the queue is granted it at once); None when no unexpired permit is
        held under it. Its holder's next renewal answers False: its lease is lost. Raises
        BackendUnavailable when Redis does not answer."""
        held = next((h for h in self.do_holders() if h.token == token), None)
        if held is None or not self.do_release(token, held.fencing):
            return None  # not held, or released or granted anew between the two calls
        return held

    def close(self) -> None:
        """Wake every local waiter with PermitTimeout; later acquires fail at once.

        Held permits stay: their owners release them (or their leases end). Idempotent.
        """
        self._inbox.close()

    @property
    def listening(self) -> threading.Event:
        """Set once Redis confirmed the subscription to grant announcements."""
        return self._inbox.listening

    # -- one script each ---------------------------------------------------------------------

    def do_acquire(self, token: str, holder: Holder, nonce: str = "0") -> Attempt:
        """Run the acquire script once: grant, or queue (keeping the place) and refresh the
        liveness deadline and where to announce a grant (`nonce`: this wait's id)."""
        reply = self._run(
            "sem_acquire", "acquire a permit", token, holder.worker, holder.task_id,
            self._lease_ms, self._waiter_ttl_ms, self._grant_ms, self._inbox.inbox, nonce,
            self._channel,
        )  # fmt: skip
        kind = int(reply[0])
        if kind == 1:
            granted = Holder(str(reply[2]), str(reply[3]))
            return Attempt(True, int(reply[1]), granted, int(reply[4]) / 1000)
        if kind == -1:
            return Attempt(False, no_limit=True)
        return Attempt(False, rank=int(reply[1]), free=int(reply[2]))

    def do_release(self, token: str, fencing: int) -> bool:
        reply = self._run("sem_release", "release a permit", token, fencing, self._channel)
        return int(reply) == 1

    def do_renew(self, grants: Sequence[tuple[str, int]]) -> list[bool]:
        """Renew each (token, fencing) grant: True per grant extended (one script per
        _RENEW_BATCH grants)."""
        renewed: list[bool] = []
        for start in range(0, len(grants), _RENEW_BATCH):
            flat = [part for grant in grants[start : start + _RENEW_BATCH] for part in grant]
            reply = self._run("sem_renew", "renew permits", self._lease_ms, self._channel, *flat)
            renewed += [int(answer) == 1 for answer in reply]
        return renewed

    def do_reclaim(self, token: str, holder: Holder) -> tuple[int, bool]:
        """Returns the grant's fencing token, and whether it was granted anew."""
        reply = self._run(
            "sem_reclaim", "re-register a permit", token, holder.worker, holder.task_id,
            self._lease_ms,
        )  # fmt: skip
        return int(reply[0]), int(reply[1]) == 1

    def do_set_limit(self, limit: int, source: str) -> tuple[int, int, bool]:
        """The cap in force, the free permits under it (negative when holders exceed it), and
        whether `limit` was stored: `source` admin (always), config (unless an admin's cap
        is stored), restore-admin or restore-config (only when none is)."""
        reply = self._run("sem_set_limit", "set the limit", limit, self._channel, source)
        return int(reply[0]), int(reply[1]), int(reply[2]) == 1

    def do_leave(self, token: str, nonce: str = "") -> int:
        """Take `token` out of the queue: 1 when it was queued, 2 when this wait (`nonce`)
        had been granted a permit meanwhile (given back, to the next in line), 0 otherwise."""
        return int(self._run(
            "sem_leave", "leave the permit queue", token, self._channel, self._inbox.inbox, nonce
        ))  # fmt: skip

    def do_holders(self) -> list[HolderInfo]:
        reply = self._run("sem_holders", "read the permit holders")
        now_ms = int(reply[0])
        found: list[HolderInfo] = []
        for i in range(1, len(reply), 3):
            token, lease_end_ms, raw = str(reply[i]), int(reply[i + 1]), reply[i + 2]
            # fencing \t worker \t task_id [\t inbox \t nonce]; missing when the hash lost
            # the entry, something else when it is not ours (shown as fencing 0)
            fencing, worker, task_id = [*str(raw or "").split("\t"), "", "", ""][:3]
            found.append(
                HolderInfo(
                    Holder(worker, task_id), token, int(fencing) if fencing.isdigit() else 0,
                    (lease_end_ms - now_ms) / 1000,
                )
            )  # fmt: skip
        found.sort(key=lambda h: h.fencing)
        return found

    # -- internals -------------------------------------------------------------------------

    def _attempt(self, token: str, holder: Holder, nonce: str) -> Attempt:
        attempt = self.do_acquire(token, holder, nonce)
        if attempt.no_limit:  # Redis forgot it (restarted empty): the known cap, once, for all
            self.restore_limit()
            attempt = self.do_acquire(token, holder, nonce)
        return attempt

    def _granted(self, token: str, attempt: Attempt, holder: Holder) -> Lease:
        return self._lease(token, attempt.fencing, attempt.holder or holder, attempt.lease_s)

    def _lease(self, token: str, fencing: int, holder: Holder, ttl_s: float) -> Lease:
        return Lease(token, fencing, holder, ttl_s, self)

    def _give_up(self, token: str, nonce: str) -> None:
        """Leave the queue (a grant made to this wait meanwhile is given back to the next in
        line); if Redis fails now, the liveness deadline removes the entry later."""
        try:
            self.do_leave(token, nonce)
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


def _check_fields(token: str, holder: Holder) -> None:
    """The scripts keep tab-separated records: a tab in a field would split it."""
    if "\t" in token or "\t" in holder.worker or "\t" in holder.task_id:
        raise ValueError("token, worker and task_id must not contain a tab")
