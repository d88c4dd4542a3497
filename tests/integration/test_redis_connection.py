"""The client taskmon builds, against a real redis-server: closing it closes its sockets."""

from __future__ import annotations

import pytest
import redis

from taskmon.config import Settings
from taskmon.harness.redis_server import RedisServer
from taskmon.redis.connection import make_client
from tests.support.timing import wait_for

pytestmark = pytest.mark.redis


def connections_named(observer: redis.Redis, name: str) -> int:
    return sum(1 for c in observer.client_list() if c["name"] == name)


def test_close_disconnects_every_pooled_connection(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """A worker that exits or reloads must not leave sockets open on Redis or in the process."""
    name = "test-close-pool"
    client = make_client(Settings(redis_url=redis_server.url), client_name=name)
    pool = client.connection_pool
    # Four connections checked out at once, as four request threads would hold them.
    taken = [pool.get_connection() for _ in range(4)]
    for connection in taken:
        pool.release(connection)
    assert connections_named(redis_client, name) == 4

    client.close()
    wait_for(lambda: connections_named(redis_client, name) == 0, message="pool sockets closed")
