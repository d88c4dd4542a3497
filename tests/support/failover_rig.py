"""A private redis-server per test and worker runtimes on it, for the failover tests: Redis
can be stopped, paused or restarted under them without touching other tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from taskmon.config import load_settings
from taskmon.faultproxy import FaultProxy
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.toxiproxy_client import connect
from taskmon.redis.codec import task_from_fields
from taskmon.redis.keys import Keys
from taskmon.runtime import Runtime, build_runtime

MakeRuntime = Callable[..., Runtime]
KEYS = Keys("failover")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(workdir=tmp_path / "redis") as made:
        yield made


@pytest.fixture
def cut_off(own_redis: RedisServer) -> Iterator[tuple[Any, int]]:
    """A proxy in front of the test's Redis, for a worker that can lose it alone: (the
    toxiproxy Proxy, the port it listens on)."""
    with FaultProxy("127.0.0.1", 0, seed=3) as server:
        proxy = connect(server.url).create(upstream=f"127.0.0.1:{own_redis.port}", name="redis_a")
        yield proxy, int(str(proxy.listen).rsplit(":", 1)[1])


@pytest.fixture
def own_observer(own_redis: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(own_redis.url, decode_responses=True, socket_timeout=5)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def make_runtime(own_redis: RedisServer, tmp_path: Path) -> Iterator[MakeRuntime]:
    made: list[Runtime] = []

    def factory(worker_id: str = "host:1", **overrides: Any) -> Runtime:
        settings = load_settings(
            {
                "backend": "redis",
                "redis_url": own_redis.url,
                "key_prefix": KEYS.prefix,
                "engine": "tone",
                "tone_ms_per_char": 0,
                "result_dir": tmp_path / "results",
                "concurrency_limit": 2,
                **overrides,
            }
        )
        made.append(build_runtime(settings, worker_id=worker_id))
        return made[-1]

    yield factory
    for rt in made:
        rt.close(wait=True)


def stored(own_observer: redis.Redis, task_id: str) -> Any:
    fields = cast("dict[str, str]", own_observer.hgetall(KEYS.task(task_id)))
    return task_from_fields(fields) if fields else None


def ended(rt: Runtime, task_id: str) -> bool:
    task = rt.monitor.get(task_id)
    return task is not None and task.state.terminal
