"""One pub/sub connection per worker process, fanned out to local listeners.

A thread owns the connection: it reads messages and performs every SUBSCRIBE and UNSUBSCRIBE
(redis-py's PubSub is not safe to share between threads), so `listen()` hands it a request and
waits until Redis confirms the subscription. A caller can therefore subscribe, then read a
snapshot, and know that every later publish reaches it.

Pub/sub forgets what was published while a subscriber was away. When the connection breaks, the
thread reconnects with backoff, resubscribes every channel, and then calls the reconnect hooks,
which re-read the state they care about (task snapshots, free permits): Celery's order.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import redis

from taskmon.ports import BackendUnavailable
from taskmon.redis.diagnosis import refused_by_acl
from taskmon.redis.errors import UNAVAILABLE_ERRORS, report_acl_refusal

log = logging.getLogger(__name__)

Callback = Callable[[str], None]
_POLL_S = 0.05  # how long the reader waits on the socket before serving (un)subscribe requests
_MAX_BACKOFF_S = 2.0
# A listen() cuts a reconnection backoff short, but attempts stay at least this far apart.
_MIN_RETRY_S = 0.05
# What ends the connection and calls for a reconnection (anything else is a bug of ours).
_CONNECTION_LOST: tuple[type[BaseException], ...] = (*UNAVAILABLE_ERRORS, OSError)


@dataclass(eq=False)
class Listener:
    channel: str
    callback: Callback


@dataclass(eq=False)
class _Request:
    channel: str
    subscribe: bool
    done: threading.Event = field(default_factory=threading.Event)


class RedisSubscriber:
    def __init__(self, client: redis.Redis, *, confirm_timeout_s: float = 2.0) -> None:
        if not client.connection_pool.connection_kwargs.get("decode_responses"):
            # With bytes, channel names never match and every listen() would time out.
            raise ValueError("RedisSubscriber needs a client built with decode_responses=True")
        self._client = client
        self._confirm_timeout_s = confirm_timeout_s
        self._lock = threading.Lock()
        self._listeners: defaultdict[str, list[Listener]] = defaultdict(list)
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._awaiting: dict[str, list[_Request]] = defaultdict(list)
        # Set once Redis confirmed SUBSCRIBE for a channel; one per channel with listeners.
        self._confirmed: dict[str, threading.Event] = {}
        self._reconnect_hooks: list[Callable[[], None]] = []
        self._lost_hooks: list[Callable[[BaseException], None]] = []
        self._stop = threading.Event()
        # Set by listen() and close(): the reader stops waiting out its backoff.
        self._wake = threading.Event()
        self._connected = threading.Event()
        self._reconnected = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="taskmon-subscriber", daemon=True
                )
                self._thread.start()

    def on_reconnect(self, hook: Callable[[], None]) -> None:
        """Call `hook` (in the reader thread) after every reconnection and resubscription."""
        self._reconnect_hooks.append(hook)

    def on_lost(self, hook: Callable[[BaseException], None]) -> None:
        """Call `hook` (in the reader thread) when the connection breaks, once per outage."""
        self._lost_hooks.append(hook)

    def remove_reconnect_hook(self, hook: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._reconnect_hooks.remove(hook)

    def listen(self, channel: str, callback: Callback) -> Listener:
        """Deliver every message of `channel` to `callback`, from the moment this returns.

        Raises BackendUnavailable, and keeps nothing, when Redis does not confirm the
        subscription within `confirm_timeout_s`.
        """
        self.start()
        listener = Listener(channel, callback)
        with self._lock:
            self._listeners[channel].append(listener)
            confirmed = self._confirmed.get(channel)
            if confirmed is None:
                confirmed = self._confirmed[channel] = threading.Event()
                self._requests.put(_Request(channel, subscribe=True, done=confirmed))
        # Someone wants Redis now: a reader waiting out a backoff tries again at once, or the
        # confirm timeout could pass before the reader has even reconnected.
        self._wake.set()
        # A second listener of a channel still being subscribed waits for the same answer.
        if not confirmed.wait(self._confirm_timeout_s):
            self.unlisten(listener)
            raise BackendUnavailable(f"Redis did not confirm SUBSCRIBE {channel} in time")
        return listener

    def unlisten(self, listener: Listener) -> None:
        with self._lock:
            listeners = self._listeners.get(listener.channel, [])
            if listener in listeners:
                listeners.remove(listener)
            last = not listeners
            if last:
                self._listeners.pop(listener.channel, None)
                self._confirmed.pop(listener.channel, None)
        if last:
            self._requests.put(_Request(listener.channel, subscribe=False))

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    # -- the reader thread -----------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call, unused-ignore]
            self._reconnected.clear()  # this loop runs the hooks itself after a reconnection
            try:
                channels = self._resubscribe(pubsub)
                if backoff > 0.05:
                    self._after_reconnect(pubsub, channels)
                backoff = 0.05
                self._serve(pubsub)
            except _CONNECTION_LOST as exc:
                if backoff == 0.05:  # the first failure of this outage
                    for lost in list(self._lost_hooks):
                        self._safe(partial(lost, exc))
                self._connected.clear()
                log.warning(
                    "event subscriber lost Redis (%s); retrying in %.2f s: live events pause, "
                    "streams fall back to re-reading task state",
                    exc,
                    backoff,
                )
                self._pause(backoff)
                backoff = min(_MAX_BACKOFF_S, backoff * 2)
            except Exception as exc:
                # Never let the one reader thread die: live events would stop for good.
                self._connected.clear()
                if refused_by_acl(exc):  # a channel outside the user's patterns: no bug
                    report_acl_refusal("subscribing to task events", exc)
                else:
                    log.exception("event subscriber failed; restarting it in %.2f s", backoff)
                self._pause(backoff)
                backoff = min(_MAX_BACKOFF_S, backoff * 2)
            finally:
                # A broken connection may fail to close; it is gone either way.
                with contextlib.suppress(Exception):
                    # The connection goes back to the pool: take our callback off it first.
                    if pubsub.connection is not None:
                        pubsub.connection.deregister_connect_callback(self._on_silent_reconnect)
                    pubsub.close()
        self._connected.clear()

    def _pause(self, backoff: float) -> None:
        """Wait out `backoff`, or less when a listen() asks for Redis (never under _MIN_RETRY_S)."""
        started = time.monotonic()
        self._wake.clear()
        if self._wake.wait(backoff) and not self._stop.is_set():
            self._stop.wait(max(0.0, _MIN_RETRY_S - (time.monotonic() - started)))

    def _resubscribe(self, pubsub: redis.client.PubSub) -> list[str]:
        """Subscribe every channel with listeners; returns those channels."""
        with self._lock:
            channels = list(self._listeners)
        # A connection needs at least one subscription before it can be read from.
        if channels:
            pubsub.subscribe(*channels)
        else:
            pubsub.ping()
        # Within the client's Retry, redis-py's PubSub reconnects and resubscribes by itself,
        # and no error reaches _run: hear about those reconnections too, so the hooks run.
        if pubsub.connection is not None:
            pubsub.connection.register_connect_callback(self._on_silent_reconnect)
        self._connected.set()
        return channels

    def _on_silent_reconnect(self, connection: object) -> None:
        self._reconnected.set()

    def _serve(self, pubsub: redis.client.PubSub) -> None:
        while not self._stop.is_set():
            if self._reconnected.is_set():
                self._reconnected.clear()
                self._after_reconnect(pubsub, [str(channel) for channel in pubsub.channels])
            self._handle_requests(pubsub)
            self._read_one(pubsub, _POLL_S)

    def _read_one(self, pubsub: redis.client.PubSub, timeout: float) -> str | None:
        """Handle one message; the channel name when it confirmed a subscription."""
        message = pubsub.get_message(timeout=timeout)
        if message is None:
            return None
        kind, channel = message["type"], message["channel"]
        if kind == "subscribe":
            for request in self._awaiting.pop(channel, []):
                request.done.set()
            return str(channel)
        if kind == "message":
            self._deliver(channel, message["data"])
        return None

    def _after_reconnect(self, pubsub: redis.client.PubSub, channels: list[str]) -> None:
        """Wait until Redis confirmed every resubscription, then run the hooks.

        In that order a hook's snapshot read happens after the subscriptions are live, so
        nothing published after the read can be missed (Celery's order). Only `channels`, those
        resubscribed, are awaited: a channel listened to since is still a queued request, whose
        confirmation comes after this (waiting for it here would always time out).
        """
        pending = set(channels)
        deadline = time.monotonic() + self._confirm_timeout_s
        while pending and time.monotonic() < deadline:
            channel = self._read_one(pubsub, _POLL_S)
            if channel in pending:
                pending.discard(channel)
                # A listen() of this channel still queued is confirmed by the resubscription.
                with self._lock:
                    confirmed = self._confirmed.get(channel)
                if confirmed is not None:
                    confirmed.set()
        if pending:
            log.warning("Redis did not confirm %d resubscription(s) in time", len(pending))
        log.warning("event subscriber reconnected to Redis; re-reading state")
        for hook in list(self._reconnect_hooks):
            self._safe(hook)

    def _handle_requests(self, pubsub: redis.client.PubSub) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                wanted = bool(self._listeners.get(request.channel))
            if request.subscribe and wanted:
                self._awaiting[request.channel].append(request)
                pubsub.subscribe(request.channel)
            elif not request.subscribe and not wanted:
                pubsub.unsubscribe(request.channel)  # type: ignore[no-untyped-call]
                request.done.set()
            else:
                request.done.set()  # overtaken by a later listen/unlisten of the same channel

    def _deliver(self, channel: str, data: str) -> None:
        with self._lock:
            listeners = list(self._listeners.get(channel, ()))
        for listener in listeners:
            try:
                listener.callback(data)
            except Exception:
                log.exception("listener of %s failed", channel)

    @staticmethod
    def _safe(call: Callable[[], None]) -> None:
        try:
            call()
        except Exception:
            log.exception("event listener failed")
