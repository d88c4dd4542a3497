"""Both TaskMonitor adapters behind one face, so one suite states the port's contract.

`store.monitor` is one worker's monitor; `store.another()` is a second worker on the same
store: for Redis a second process's wiring (own client, subscriber and hub), for memory the
same object, since memory mode has one store per process. `store.written()` is everything the
store holds, so "nothing was written" is checked beyond what the port can read back.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis

from taskmon.memory import InMemoryTaskMonitor
from taskmon.ports import TaskMonitor
from taskmon.redis.keys import Keys
from tests.support.redis_wiring import wire_monitor

TTL_S = 100


@dataclass
class Store:
    """One shared store and the workers made on it; `close()` closes them all."""

    another: Callable[[], TaskMonitor]
    written: Callable[[], object]
    closers: list[Callable[[], None]] = field(default_factory=list)
    monitor: TaskMonitor = field(init=False)

    def __post_init__(self) -> None:
        self.monitor = self.another()

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


def memory_store() -> Store:
    shared = InMemoryTaskMonitor(ttl_s=TTL_S)
    return Store(
        another=lambda: shared, written=partial(_memory_state, shared), closers=[shared.close]
    )


def redis_store(url: str) -> Store:
    keys = Keys(prefix=f"c-{uuid.uuid4().hex[:12]}")
    observer = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
    closers: list[Callable[[], None]] = [observer.close]
    return Store(
        another=partial(_redis_worker, url, keys, closers),
        written=partial(redis_state, observer, keys),
        closers=closers,
    )


def _redis_worker(url: str, keys: Keys, closers: list[Callable[[], None]]) -> TaskMonitor:
    wiring = wire_monitor(url, keys, name="contract", ttl_s=TTL_S)
    closers.append(wiring.close)
    return wiring.monitor


def _memory_state(monitor: InMemoryTaskMonitor) -> object:
    with monitor._lock:
        return (
            dict(monitor._tasks),
            dict(monitor._keys),
            dict(monitor._key_deadlines),
            dict(monitor._in_state),
        )


def redis_state(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Every key of the namespace with its value."""
    found: dict[str, Any] = {}
    for name in client.scan_iter(match=keys.namespace + ":*"):
        kind = str(client.type(name))
        if kind == "zset":
            found[name] = client.zrange(name, 0, -1, withscores=True)
        else:
            found[name] = {"hash": client.hgetall, "string": client.get}[kind](name)
    return found
