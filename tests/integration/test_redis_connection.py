"""The client taskmon builds, against a real redis-server (closing it closes its sockets) and a
silent listener (a failing call keeps its budget)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
import redis

from taskmon.config import Settings
from taskmon.harness.redis_server import RedisServer
from taskmon.redis.connection import call_budget_s, make_client, pool_wait_s
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


def test_a_call_that_finds_the_pool_busy_waits_for_a_connection_instead_of_failing(
    redis_server: RedisServer,
) -> None:
    """A burst of streams or requests larger than the pool must queue for it, not take the
    worker for a lost Redis (a pool that raised at once tripped a worker to degraded)."""
    settings = Settings(redis_url=redis_server.url)
    client = make_client(settings, client_name="test-busy-pool", max_connections=1)
    pool = client.connection_pool
    try:
        busy = pool.get_connection()
        answers: list[object] = []
        caller = threading.Thread(target=lambda: answers.append(client.ping()))
        caller.start()
        time.sleep(0.05)  # the caller is waiting for the only connection
        assert not answers
        pool.release(busy)
        caller.join(10)
        assert answers == [True]

        busy = pool.get_connection()
        started = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            client.ping()  # the pool stays busy past the budget: a failure, in bounded time
        assert time.monotonic() - started < pool_wait_s(settings) + call_budget_s(settings) + 1.0
        pool.release(busy)
    finally:
        client.close()


class Silent:
    """A TCP listener that accepts connections and never answers: a hung Redis (or a network
    that drops replies), for the connects a call makes on its way to failing."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.accepted.append(self._server.accept()[0])

    def close(self) -> None:
        self._server.close()
        for connection in self.accepted:
            connection.close()


def test_a_call_that_needs_a_new_connection_keeps_the_documented_budget() -> None:
    """Each try of a command opens one connection, no more: redis-py retries the connect
    and handshake with the command's own Retry, which made a call to a silent Redis take
    (retries + 1) squared timeouts (5.0 s against the 2.1 s documented before)."""
    silent = Silent()
    settings = Settings(redis_url=f"redis://127.0.0.1:{silent.port}/0")
    client = make_client(settings, client_name="test-budget")
    try:
        started = time.monotonic()
        with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
            client.get("anything")
        elapsed = time.monotonic() - started
    finally:
        client.close()
        silent.close()
    assert len(silent.accepted) == settings.redis_retries + 1
    # Not a speed target: a wall of timeouts that cannot end early; the slack is for a busy host.
    assert elapsed < call_budget_s(settings) + 1.0, f"{elapsed:.2f} s"
