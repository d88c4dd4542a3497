"""Each port's adapters behind one fixture: `store` (TaskMonitor) and `rig` (Semaphore), each
parametrized over memory and Redis, so one suite states each port's contract."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskmon.harness.redis_server import RedisServer
from taskmon.ports import TaskMonitor
from tests.support.monitors import Store, memory_store, redis_store
from tests.support.semaphores import MemoryRig, RedisRig, SemaphoreRig

BOTH = ["memory", pytest.param("redis", marks=pytest.mark.redis)]


def _redis_url(request: pytest.FixtureRequest) -> str:
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture(params=BOTH)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    made = memory_store() if request.param == "memory" else redis_store(_redis_url(request))
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def monitor(store: Store) -> TaskMonitor:
    return store.monitor


@pytest.fixture(params=BOTH)
def rig(request: pytest.FixtureRequest) -> Iterator[SemaphoreRig]:
    made: SemaphoreRig = MemoryRig() if request.param == "memory" else RedisRig(_redis_url(request))
    try:
        yield made
    finally:
        made.close()
