"""Both TaskMonitor adapters behind one fixture, so one suite states the port's contract.

`store.monitor` is one worker's monitor; `store.another()` is a second worker on the same
store: for Redis a second process's wiring (own client, subscriber and hub), for memory the
same object, since memory mode has one store per process. `store.written()` is everything the
store holds, so "nothing was written" is checked beyond what the port can read back.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import redis

from taskmon.harness.redis_server import RedisServer
from taskmon.memory import InMemoryTaskMonitor
from taskmon.ports import TaskMonitor
from taskmon.redis.keys import Keys
from tests.redis_worker import make_worker

TTL_S = 100


@dataclass
class Store:
    """One shared store and the workers made on it."""

    another: Callable[[], TaskMonitor]
    written: Callable[[], object]
    closers: list[Callable[[], None]] = field(default_factory=list)
    monitor: TaskMonitor = field(init=False)

    def __post_init__(self) -> None:
        self.monitor = self.another()


def redis_worker(url: str, keys: Keys, closers: list[Callable[[], None]]) -> TaskMonitor:
    worker = make_worker(url, keys, name="contract", ttl_s=TTL_S)
    closers.append(worker.close)
    return worker.monitor


def memory_state(monitor: InMemoryTaskMonitor) -> object:
    with monitor._lock:
        return dict(monitor._tasks), dict(monitor._keys), dict(monitor._in_state)


def redis_state(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Every key of the namespace with its value."""
    found: dict[str, Any] = {}
    for name in client.scan_iter(match=keys.namespace + ":*"):
        kind = client.type(name)
        read = {"hash": client.hgetall, "string": client.get, "zset": client.zrange}[kind]
        found[name] = read(name, 0, -1) if kind == "zset" else read(name)
    return found


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    closers: list[Callable[[], None]] = []
    if request.param == "memory":
        shared = InMemoryTaskMonitor(ttl_s=TTL_S)
        closers.append(shared.close)
        made = Store(another=lambda: shared, written=partial(memory_state, shared), closers=closers)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        keys = Keys(prefix=f"c-{uuid.uuid4().hex[:12]}")
        observer = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=5)
        closers.append(observer.close)
        made = Store(
            another=partial(redis_worker, server.url, keys, closers),
            written=partial(redis_state, observer, keys),
            closers=closers,
        )
    try:
        yield made
    finally:
        for close in reversed(closers):
            close()


@pytest.fixture
def monitor(store: Store) -> TaskMonitor:
    return store.monitor
