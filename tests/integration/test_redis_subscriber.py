"""The per-process subscriber against a real redis-server: delivery, refcounts, reconnection."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from taskmon.config import Settings
from taskmon.harness.processes import wait_until
from taskmon.harness.redis_server import RedisServer
from taskmon.ports import BackendUnavailable
from taskmon.redis.connection import make_client
from taskmon.redis.subscriber import RedisSubscriber

pytestmark = pytest.mark.redis


def _client(url: str) -> redis.Redis:
    return make_client(Settings(redis_url=url, engine="tone"), client_name="test-sub")


@pytest.fixture
def subscriber(redis_server: RedisServer) -> Iterator[RedisSubscriber]:
    sub = RedisSubscriber(_client(redis_server.url))
    try:
        yield sub
    finally:
        sub.close()


def test_a_listener_gets_every_message_published_after_listen_returns(
    subscriber: RedisSubscriber, redis_client: redis.Redis
) -> None:
    got: queue.SimpleQueue[str] = queue.SimpleQueue()
    subscriber.listen("chan-a", got.put)
    for n in range(5):
        redis_client.publish("chan-a", f"m{n}")
    assert [got.get(timeout=5) for _ in range(5)] == [f"m{n}" for n in range(5)]


def test_listeners_share_one_subscription_and_the_last_unlisten_drops_it(
    subscriber: RedisSubscriber, redis_client: redis.Redis
) -> None:
    first: queue.SimpleQueue[str] = queue.SimpleQueue()
    second: queue.SimpleQueue[str] = queue.SimpleQueue()
    one = subscriber.listen("chan-b", first.put)
    two = subscriber.listen("chan-b", second.put)
    assert redis_client.pubsub_numsub("chan-b") == [("chan-b", 1)]
    redis_client.publish("chan-b", "both")
    assert first.get(timeout=5) == "both"
    assert second.get(timeout=5) == "both"
    subscriber.unlisten(one)
    redis_client.publish("chan-b", "second only")
    assert second.get(timeout=5) == "second only"
    assert first.empty()
    subscriber.unlisten(two)
    wait_until(
        lambda: redis_client.pubsub_numsub("chan-b") == [("chan-b", 0)],
        timeout=5,
        what="UNSUBSCRIBE after the last listener left",
    )


def test_a_failing_listener_does_not_stop_the_others(
    subscriber: RedisSubscriber, redis_client: redis.Redis
) -> None:
    got: queue.SimpleQueue[str] = queue.SimpleQueue()

    def broken(_: str) -> None:
        raise RuntimeError("listener bug")

    subscriber.listen("chan-c", broken)
    subscriber.listen("chan-c", got.put)
    redis_client.publish("chan-c", "still delivered")
    assert got.get(timeout=5) == "still delivered"


def test_after_a_server_restart_it_resubscribes_then_calls_the_hooks(tmp_path: Path) -> None:
    with RedisServer(workdir=tmp_path) as server:
        sub = RedisSubscriber(_client(server.url))
        reconnected = threading.Event()
        sub.on_reconnect(reconnected.set)
        got: queue.SimpleQueue[str] = queue.SimpleQueue()
        plain = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            sub.listen("chan-d", got.put)
            server.restart(down_for_s=0.3)
            assert reconnected.wait(10), "the reconnect hook ran"
            # The hook runs after resubscription, so this publish must arrive.
            plain.publish("chan-d", "after restart")
            assert got.get(timeout=5) == "after restart"
            assert sub.connected
        finally:
            sub.close()
            plain.close()


def test_listen_fails_fast_when_redis_does_not_answer(tmp_path: Path) -> None:
    with RedisServer(workdir=tmp_path) as server:
        sub = RedisSubscriber(_client(server.url), confirm_timeout_s=1.0)
        try:
            sub.listen("warm-up", lambda _: None)
            server.pause()
            try:
                with pytest.raises(BackendUnavailable):
                    sub.listen("chan-e", lambda _: None)
            finally:
                server.resume()
        finally:
            sub.close()
