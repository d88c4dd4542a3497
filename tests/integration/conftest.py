"""A plain client on the session's redis-server, and a fresh key namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from taskmon.harness.redis_server import RedisServer
from taskmon.redis.keys import Keys


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
