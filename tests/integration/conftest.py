"""A plain client on the session's redis-server, a fresh key namespace per test, and a factory of
monitor wirings on both (each a worker's own client, subscriber, hub and monitor), closed after
the test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from taskmon.harness.redis_server import RedisServer
from taskmon.redis.keys import Keys

# A private redis-server per test, and runtimes on it, for the failover tests.
from tests.support.failover_rig import cut_off, make_runtime, own_observer, own_redis  # noqa: F401
from tests.support.redis_wiring import MonitorWiring, wire_monitor


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=5)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def keys() -> Keys:
    """A namespace no other test uses, so tests never see each other's keys."""
    return Keys(prefix=f"t-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def make_monitor_wiring(
    redis_server: RedisServer, keys: Keys
) -> Iterator[Callable[..., MonitorWiring]]:
    made: list[MonitorWiring] = []

    def factory(**kwargs: Any) -> MonitorWiring:
        made.append(wire_monitor(redis_server.url, keys, **kwargs))
        return made[-1]

    yield factory
    for worker in made:
        worker.close()
