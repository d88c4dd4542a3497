"""Where a process's queued acquires learn of their grants: one listener on the grants channel.

The semaphore's scripts grant a permit to the head of the queue themselves and announce it on
one channel per namespace, `inbox \t token \t fencing \t grant_ms \t nonce`; each process
(each RedisSemaphore) has its own inbox id, and its one listener, on the process's
RedisSubscriber thread, hands the grant to the waiting thread: an Event set, no second call to
Redis. An announcement can be lost (pub/sub forgets what it published while a subscriber was
away): nothing is lost with it, since the grant is stored and the waiter finds it at its next
acquire call (at least every `retry_interval_s`); after a reconnection, every waiter is woken
to make that call at once.

Each wait has a nonce, echoed in its grant's announcement: an announcement for a wait that
ended (timed out, gave its grant back) is not taken by a later wait with the same token. An
announcement that arrives before its wait is registered (the acquire's first reply said
"queued", and a release granted it in between) is kept a moment, and the wait takes it when
it registers.
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from collections import OrderedDict

from taskmon.ports import BackendUnavailable
from taskmon.redis.subscriber import Listener, RedisSubscriber

log = logging.getLogger(__name__)

# Announcements kept for a wait not registered yet (a few microseconds' window each).
_UNCLAIMED_KEPT = 256


class Wait:
    """One queued acquire of this process, woken by its grant (or a close)."""

    __slots__ = ("event", "grant", "nonce")

    def __init__(self, nonce: str) -> None:
        self.nonce = nonce
        self.event = threading.Event()
        self.grant: tuple[int, float] | None = None  # (fencing, first lease in s)


class GrantInbox:
    """The grants announced to one process's waiters, handed to each waiting thread."""

    def __init__(self, subscriber: RedisSubscriber, channel: str, retry_s: float) -> None:
        """Subscribe now; if Redis does not confirm, a thread subscribes again every
        `retry_s` until it does (waiters meanwhile find their grants by retrying)."""
        self.inbox = uuid.uuid4().hex[:12]  # this process's id on the channel
        self.closed = False
        self._channel = channel
        self._retry_s = retry_s
        self._nonces = itertools.count(1)
        self._lock = threading.Lock()
        self._waits: dict[str, Wait] = {}
        self._unclaimed: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        self._stopped = threading.Event()  # set with `closed`, for the re-subscribing thread
        self._subscriber = subscriber
        self._listener: Listener | None = None
        self.listening = threading.Event()  # set once Redis confirmed the subscription
        subscriber.on_reconnect(self.wake_all)
        if not self._listen():
            threading.Thread(
                target=self._listen_until_confirmed, name="taskmon-semaphore-listen", daemon=True
            ).start()

    def nonce(self) -> str:
        return str(next(self._nonces))

    def wait_for(self, token: str, nonce: str) -> Wait:
        """Register a wait for `token` (set at once when closed, or when its grant was
        announced before it registered)."""
        wait = Wait(nonce)
        with self._lock:
            wait.grant = self._unclaimed.pop((token, nonce), None)
            if self.closed or wait.grant is not None:
                wait.event.set()
            self._waits[token] = wait
        return wait

    def forget(self, token: str, wait: Wait) -> None:
        with self._lock:
            if self._waits.get(token) is wait:
                del self._waits[token]

    def close(self) -> None:
        """Wake every wait (they see `closed`) and stop listening. Idempotent."""
        with self._lock:
            self.closed = True
            listener, self._listener = self._listener, None
        self._stopped.set()
        self.wake_all()
        self._subscriber.remove_reconnect_hook(self.wake_all)
        if listener is not None:
            self._subscriber.unlisten(listener)

    def wake_all(self) -> None:
        with self._lock:
            waits = list(self._waits.values())
        for wait in waits:
            wait.event.set()

    def _on_grant(self, data: str) -> None:
        """Subscriber thread: a grant to this process goes to its wait; others are skipped at
        the first field; one whose wait has ended (or whose nonce is another wait's) is
        dropped, its permit given back by that wait's leave or found by its next acquire."""
        if not data.startswith(self.inbox):
            return
        fields = data.split("\t")
        if len(fields) != 5 or fields[0] != self.inbox:
            log.warning("unexpected semaphore grant announcement %r; waking every waiter",
                        data[:200])  # fmt: skip
            self.wake_all()
            return
        _, token, fencing, grant_ms, nonce = fields
        grant = (int(fencing), int(grant_ms) / 1000)
        with self._lock:
            wait = self._waits.get(token)
            if wait is not None and wait.nonce == nonce:
                wait.grant = grant
                wait.event.set()
            elif wait is None:
                self._unclaimed[(token, nonce)] = grant
                while len(self._unclaimed) > _UNCLAIMED_KEPT:
                    self._unclaimed.popitem(last=False)

    def _listen(self) -> bool:
        """Subscribe to the announcements. False (and logged) when Redis did not confirm."""
        try:
            listener = self._subscriber.listen(self._channel, self._on_grant)
        except BackendUnavailable as exc:
            log.warning(
                "semaphore grant announcements are not subscribed (%s); waiters retry every "
                "%.3g s, and subscribing is retried at that pace",
                exc,
                self._retry_s,
            )
            return False
        with self._lock:
            closed = self.closed
            if not closed:
                self._listener = listener
        if closed:
            self._subscriber.unlisten(listener)
        else:
            self.listening.set()
            self.wake_all()  # a grant announced before now may have been missed
        return True

    def _listen_until_confirmed(self) -> None:
        while not self._stopped.wait(self._retry_s):
            if self._listen():
                return
