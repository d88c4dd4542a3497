"""Task events across every worker: Redis pub/sub in, local subscription queues out.

The process's one RedisSubscriber holds the pub/sub connection. This hub registers one
listener per task channel that has local subscriptions and fans each message out to their
queues, so a thousand SSE streams cost one connection, and a task with ten streams in this
process one SUBSCRIBE.

Delivery is at most once, like the port says: pub/sub forgets what was published while the
connection was down. After a reconnection the subscriber resubscribes every channel and then
calls this hub's hook, which re-reads the snapshot of every task with a local subscription and
delivers it as an event. A change made while away therefore arrives late, never not at all;
readers drop what they have already seen by version.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from taskmon.domain import Task, TaskEvent
from taskmon.ports import BackendUnavailable
from taskmon.redis.codec import event_from_json, event_to_json
from taskmon.redis.errors import unavailable_as
from taskmon.redis.keys import Keys
from taskmon.redis.subscriber import Listener, RedisSubscriber
from taskmon.subscription import QueueSubscription

log = logging.getLogger(__name__)

# A second subscriber of a task waits at most this long for the first one's SUBSCRIBE
# (which the subscriber itself bounds by its confirm timeout).
_READY_TIMEOUT_S = 10.0


# Kept as a name of its own: readers of this module find the hub's subscription type.
RedisSubscription = QueueSubscription


@dataclass(eq=False)
class _Channel:
    """The local readers of one task channel and the one listener feeding them."""

    task_id: str
    readers: set[RedisSubscription] = field(default_factory=set)
    listener: Listener | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    failed: bool = False


class RedisEventHub:
    """EventHub over Redis pub/sub. Thread-safe; a slow reader never blocks the others.

    `snapshot(task_id)` reads a task's current state (RedisTaskMonitor.get, or
    redis.monitor.load_task); it is called from the subscriber's thread after a reconnection.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        subscriber: RedisSubscriber,
        *,
        snapshot: Callable[[str], Task | None],
    ) -> None:
        self._client = client
        self._keys = keys
        self._subscriber = subscriber
        self._snapshot = snapshot
        self._lock = threading.Lock()
        self._channels: dict[str, _Channel] = {}
        subscriber.on_reconnect(self._redeliver_snapshots)

    def publish(self, event: TaskEvent) -> None:
        """PUBLISH `event` to every worker. The monitor's scripts publish their own events."""
        with unavailable_as(f"publishing an event of task {event.task.task_id}"):
            self._client.publish(self._keys.task_channel(event.task.task_id), event_to_json(event))

    def subscribe(
        self, task_id: str, events: queue.SimpleQueue[TaskEvent] | None = None
    ) -> RedisSubscription:
        """A subscription that gets every event published after this returns.

        `events`: a queue shared with other subscriptions (see QueueSubscription). Raises
        BackendUnavailable when Redis does not confirm the channel's subscription in time;
        nothing stays attached then.
        """
        subscription = RedisSubscription(task_id, self.detach, events)
        with self._lock:
            channel = self._channels.get(task_id)
            first = channel is None
            if channel is None:
                channel = self._channels[task_id] = _Channel(task_id)
            channel.readers.add(subscription)
        if first:
            self._open(channel)
        if not channel.ready.wait(_READY_TIMEOUT_S) or channel.failed:
            self.detach(subscription)
            raise BackendUnavailable(
                f"Redis did not confirm the subscription to task {task_id}; check that "
                "TASKMON_REDIS_URL points at a running Redis"
            )
        return subscription

    @property
    def connected(self) -> bool:
        """Whether the process's pub/sub connection is up now (a subscribe would be confirmed)."""
        return self._subscriber.connected

    def detach(self, subscription: RedisSubscription) -> None:
        """Stop delivering to `subscription`; the last reader of a task unsubscribes its channel."""
        with self._lock:
            channel = self._channels.get(subscription.task_id)
            if channel is None or subscription not in channel.readers:
                return
            channel.readers.discard(subscription)
            if channel.readers:
                return
            del self._channels[subscription.task_id]
            # Under the hub lock, so a new first reader of this task listens after this unlisten.
            if channel.listener is not None:
                self._subscriber.unlisten(channel.listener)

    def subscriber_count(self) -> int:
        with self._lock:
            return sum(len(channel.readers) for channel in self._channels.values())

    def close(self) -> None:
        """Detach every subscription. The subscriber is the process's and stays open."""
        self._subscriber.remove_reconnect_hook(self._redeliver_snapshots)
        with self._lock:
            channels = list(self._channels.values())
            self._channels.clear()
            for channel in channels:
                if channel.listener is not None:
                    self._subscriber.unlisten(channel.listener)

    # -- the subscriber's thread -----------------------------------------------------------

    def _open(self, channel: _Channel) -> None:
        try:
            listener = self._subscriber.listen(
                self._keys.task_channel(channel.task_id),
                lambda data: self._on_message(channel, data),
            )
            with self._lock:
                channel.listener = listener
                if self._channels.get(channel.task_id) is not channel:  # close() ran meanwhile
                    self._subscriber.unlisten(listener)
        except BackendUnavailable:
            # The subscriber keeps a listener it could not confirm and gives no handle to it;
            # the callback is bound to this _Channel, which is dropped, so it delivers nowhere.
            channel.failed = True
            with self._lock:
                if self._channels.get(channel.task_id) is channel:
                    del self._channels[channel.task_id]
        finally:
            channel.ready.set()

    def _on_message(self, channel: _Channel, data: str) -> None:
        try:
            event = event_from_json(data)
        except ValueError:
            log.warning("dropped a malformed event on the channel of task %s", channel.task_id)
            return
        self._fan_out(channel, event)

    def _fan_out(self, channel: _Channel, event: TaskEvent) -> None:
        with self._lock:
            readers = list(channel.readers)
        for reader in readers:
            reader.deliver(event)

    def _redeliver_snapshots(self) -> None:
        """After a reconnection: what was published while away is lost, so re-read it."""
        with self._lock:
            channels = list(self._channels.values())
        for channel in channels:
            try:
                task = self._snapshot(channel.task_id)
            except BackendUnavailable as exc:
                # Lost again: the next reconnection runs this hook again.
                log.warning("could not re-read task snapshots after reconnecting: %s", exc)
                return
            except Exception:
                # One unreadable task must not starve the others; the stream's own periodic
                # re-read (SSE keepalive) catches up on it later.
                log.exception("could not re-read task %s after reconnecting", channel.task_id)
                continue
            if task is not None:
                self._fan_out(channel, TaskEvent(task))
