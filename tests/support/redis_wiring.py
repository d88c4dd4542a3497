"""What one worker process wires on Redis, for the tests, as taskmon.runtime wires it: its own
client and its one subscriber, with a hub and a task monitor (`wire_monitor`) or a semaphore
(`wire_semaphore`) on top. Each test worker is closed by whoever made it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import redis

from taskmon.config import Settings
from taskmon.redis.connection import make_client
from taskmon.redis.hub import RedisEventHub
from taskmon.redis.keys import Keys
from taskmon.redis.monitor import RedisTaskMonitor, load_task
from taskmon.redis.semaphore import RedisSemaphore
from taskmon.redis.subscriber import RedisSubscriber


@dataclass
class MonitorWiring:
    """The task-monitor side of one worker: client, subscriber, hub, monitor."""

    client: redis.Redis
    subscriber: RedisSubscriber
    hub: RedisEventHub
    monitor: RedisTaskMonitor

    def close(self) -> None:
        self.monitor.close()
        self.subscriber.close()
        self.client.close()


def wire_monitor(
    url: str,
    keys: Keys,
    *,
    name: str = "w",
    ttl_s: int = 100,
    confirm_timeout_s: float = 2.0,
    first_hook: Callable[[], None] | None = None,
) -> MonitorWiring:
    """`first_hook` runs on reconnect before the hub's own hook (to hold the subscriber)."""
    client = make_client(Settings(redis_url=url), client_name=f"test-{name}")
    subscriber = RedisSubscriber(client, confirm_timeout_s=confirm_timeout_s)
    if first_hook is not None:
        subscriber.on_reconnect(first_hook)
    hub = RedisEventHub(client, keys, subscriber, snapshot=partial(load_task, client, keys))
    monitor = RedisTaskMonitor(client, keys, hub=hub, ttl_s=ttl_s)
    return MonitorWiring(client, subscriber, hub, monitor)


@dataclass
class SemaphoreWiring:
    """The semaphore side of one worker: client, subscriber, semaphore."""

    client: redis.Redis
    subscriber: RedisSubscriber
    semaphore: RedisSemaphore

    def close(self) -> None:
        self.semaphore.close()
        self.subscriber.close()
        self.client.close()


def wire_semaphore(
    url: str,
    keys: Keys,
    *,
    limit: int = 1,
    ttl_s: float = 10.0,
    retry_interval_s: float = 1.0,
    confirm_timeout_s: float = 2.0,
    semaphore_class: type[RedisSemaphore] = RedisSemaphore,
    **client_options: Any,
) -> SemaphoreWiring:
    """A semaphore on `keys` with its own client and subscriber. The client waits up to 5 s a
    call unless `client_options` say otherwise (a test that means to time out sets them)."""
    options: dict[str, Any] = {"decode_responses": True, "socket_timeout": 5, **client_options}
    client = redis.Redis.from_url(url, **options)
    subscriber = RedisSubscriber(client, confirm_timeout_s=confirm_timeout_s)
    try:
        semaphore = semaphore_class(
            client,
            keys,
            default_limit=limit,
            lease_ttl_s=ttl_s,
            subscriber=subscriber,
            retry_interval_s=retry_interval_s,
        )
    except BaseException:
        subscriber.close()
        client.close()
        raise
    return SemaphoreWiring(client, subscriber, semaphore)
