"""A plain client on the session's redis-server, a fresh key namespace per test, and workers
(each its own client, subscriber, hub and monitor) on both, closed after the test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from taskmon.harness.redis_server import RedisServer
from taskmon.redis.keys import Keys
from tests.redis_worker import Worker, make_worker


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
def workers(redis_server: RedisServer, keys: Keys) -> Iterator[Callable[..., Worker]]:
    made: list[Worker] = []

    def factory(**kwargs: Any) -> Worker:
        made.append(make_worker(redis_server.url, keys, **kwargs))
        return made[-1]

    yield factory
    for worker in made:
        worker.close()
