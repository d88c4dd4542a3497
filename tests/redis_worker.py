"""What one worker process wires on Redis, for the tests: its own client, its one subscriber,
a hub and a monitor, as the composition root (app._redis_backend) wires them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import redis

from taskmon.config import Settings
from taskmon.redis.connection import make_client
from taskmon.redis.hub import RedisEventHub
from taskmon.redis.keys import Keys
from taskmon.redis.monitor import RedisTaskMonitor, load_task
from taskmon.redis.subscriber import RedisSubscriber


@dataclass
class Worker:
    client: redis.Redis
    subscriber: RedisSubscriber
    hub: RedisEventHub
    monitor: RedisTaskMonitor

    def close(self) -> None:
        self.monitor.close()
        self.subscriber.close()
        self.client.close()


def make_worker(
    url: str,
    keys: Keys,
    *,
    name: str = "w",
    ttl_s: int = 100,
    confirm_timeout_s: float = 2.0,
    first_hook: Callable[[], None] | None = None,
) -> Worker:
    """`first_hook` runs on reconnect before the hub's own hook (to hold the subscriber)."""
    client = make_client(Settings(redis_url=url), client_name=f"test-{name}")
    subscriber = RedisSubscriber(client, confirm_timeout_s=confirm_timeout_s)
    if first_hook is not None:
        subscriber.on_reconnect(first_hook)
    hub = RedisEventHub(client, keys, subscriber, snapshot=partial(load_task, client, keys))
    monitor = RedisTaskMonitor(client, keys, hub=hub, ttl_s=ttl_s)
    return Worker(client, subscriber, hub, monitor)
