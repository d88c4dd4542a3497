"""The settling window after a re-promotion: no new grant through Redis until the workers that
come back later have re-registered what they hold. It ends early once every worker alive when
the outage began says it is back, and runs its whole length while one is still away.

Found by the chaos scenario `redis-flapping` under `reject`: with Redis down and up every 3 s,
a fixed 2.8 s window after each re-promotion left almost no time to admit work, and a queued
task waited out the whole minute.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from taskmon.faultproxy import FaultProxy
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.toxiproxy_client import connect
from taskmon.runtime import Runtime
from tests.support.failover_rig import MakeRuntime
from tests.support.timing import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("clean_taskmon_env")]

TTL_MS = 1500


@pytest.fixture
def cut_off(own_redis: RedisServer) -> Iterator[tuple[Any, int]]:
    with FaultProxy("127.0.0.1", 0, seed=5) as server:
        proxy = connect(server.url).create(upstream=f"127.0.0.1:{own_redis.port}", name="redis_b")
        yield proxy, int(str(proxy.listen).rsplit(":", 1)[1])


def settle_left(rt: Runtime) -> float:
    assert rt.failover is not None
    return rt.failover.settling()


def outage(own_redis: RedisServer, *runtimes: Runtime) -> None:
    own_redis.stop_for_now()
    for rt in runtimes:
        rt.service.submit({"text": "while Redis is away"})  # a Redis call: it degrades
    wait_for(lambda: all(rt.degraded for rt in runtimes), timeout=5, message="all degraded")
    time.sleep(TTL_MS / 1000)  # past the heartbeats: the case a flapping Redis makes


def test_the_window_ends_once_every_worker_is_back(
    own_redis: RedisServer, make_runtime: MakeRuntime
) -> None:
    first = make_runtime("host:A", lease_ttl_ms=TTL_MS)
    second = make_runtime("host:B", lease_ttl_ms=TTL_MS)
    outage(own_redis, first, second)
    own_redis.start()
    wait_for(lambda: not first.degraded and not second.degraded, timeout=5, message="both back")
    back = time.monotonic()
    assert first.failover is not None
    full = first.failover.settle_s
    wait_for(lambda: settle_left(first) == 0 and settle_left(second) == 0, timeout=full,
             message="both windows over")  # fmt: skip
    assert time.monotonic() - back < full / 2, "ended early: every worker is back"


def test_a_worker_still_away_keeps_the_window_its_whole_length(
    own_redis: RedisServer, cut_off: tuple[Any, int], make_runtime: MakeRuntime
) -> None:
    proxy, port = cut_off
    first = make_runtime("host:A", lease_ttl_ms=TTL_MS)
    second = make_runtime("host:B", redis_url=f"redis://127.0.0.1:{port}/0", lease_ttl_ms=TTL_MS)
    outage(own_redis, first, second)
    proxy.disable()  # the second stays away when Redis comes back
    own_redis.start()
    wait_for(lambda: not first.degraded, timeout=5, message="the first back")
    back = time.monotonic()
    assert first.failover is not None
    full = first.failover.settle_s
    time.sleep(full / 2)
    assert second.degraded
    assert settle_left(first) > 0, "the second may hold permits Redis forgot: keep waiting"
    wait_for(lambda: settle_left(first) == 0, timeout=full, message="the window over")
    assert time.monotonic() - back >= full - 0.2
