"""RedisServer's faults, the same on each source (the container one only where a Docker
daemon answers): the data survives `restart(keep_data=True)` and not a plain `restart()`, even
right after one that kept it; a paused server answers nothing until resumed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from taskmon.harness.redis_container import docker_answers
from taskmon.harness.redis_server import RedisServer

pytestmark = pytest.mark.redis

NO_DOCKER = pytest.mark.skipif(not docker_answers(), reason="no Docker daemon answers ping here")


@pytest.fixture(params=["binary", pytest.param("container", marks=NO_DOCKER)])
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    with RedisServer(workdir=tmp_path, source=request.param, password="s3cret") as started:
        yield started


def client_of(server: RedisServer, timeout: float = 2.0) -> redis.Redis:
    no_retry = Retry(NoBackoff(), 0)  # a frozen server must show as one timeout, not ten
    return redis.Redis.from_url(
        server.url, socket_timeout=timeout, retry=no_retry, decode_responses=True
    )


def test_restart_keeps_the_data_only_when_asked(server: RedisServer) -> None:
    client = client_of(server)
    try:
        client.set("k", "v")
        server.restart(keep_data=True)
        assert client.get("k") == "v"
        server.restart()
        assert client.get("k") is None, "the snapshot kept before must not come back"
        client.set("k", "w")
        server.stop_for_now()
        server.start()
        assert client.get("k") == "w"
    finally:
        client.close()


def test_a_paused_container_answers_nothing_until_resumed(server: RedisServer) -> None:
    client = client_of(server, timeout=0.5)
    try:
        assert client.ping()
        server.pause()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        server.resume()
        assert client.ping()
    finally:
        client.close()
