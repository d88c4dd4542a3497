"""The settling window after a re-promotion: no new grant through Redis until the workers that
come back later have re-registered what they hold. It ends early once every worker alive when
the outage began has said it is back since; it runs its whole length while one is still away,
when the only word from one is older than the outage, and after Redis lost its data.

Found by the chaos scenario `redis-flapping` under `reject`: with Redis down and up every 3 s,
a fixed 2.8 s window after each re-promotion left almost no time to admit work.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from taskmon.harness.redis_server import RedisServer
from taskmon.ports import Holder
from taskmon.runtime import Runtime
from tests.support.failover_rig import MakeRuntime
from tests.support.timing import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("clean_taskmon_env")]

TTL_MS = 1500


def settle_left(rt: Runtime) -> float:
    assert rt.failover is not None
    return rt.failover.settling()


def full_window(rt: Runtime) -> float:
    assert rt.failover is not None
    return rt.failover.settle_s


def degrade(*runtimes: Runtime) -> None:
    for rt in runtimes:
        rt.service.submit({"text": "while Redis is away"})  # a Redis call: it degrades
    wait_for(lambda: all(rt.degraded for rt in runtimes), timeout=5, message="all degraded")


def outage(own_redis: RedisServer, *runtimes: Runtime) -> None:
    own_redis.stop_for_now()
    degrade(*runtimes)
    time.sleep(TTL_MS / 1000)  # past the heartbeats: the case a flapping Redis makes


def runs_its_whole_length(rt: Runtime, back: float) -> None:
    """The window of `rt`, back on Redis at `back`, ends only at its whole length."""
    wait_for(lambda: settle_left(rt) == 0, timeout=full_window(rt), message="the window over")
    assert time.monotonic() - back >= full_window(rt) - 0.2


def back_on_redis(*runtimes: Runtime) -> float:
    wait_for(lambda: not any(rt.degraded for rt in runtimes), timeout=5, message="all back")
    return time.monotonic()


def test_the_window_ends_once_every_worker_is_back(
    own_redis: RedisServer, make_runtime: MakeRuntime
) -> None:
    first = make_runtime("host:A", lease_ttl_ms=TTL_MS)
    second = make_runtime("host:B", lease_ttl_ms=TTL_MS)
    outage(own_redis, first, second)
    own_redis.start()
    back = back_on_redis(first, second)
    full = full_window(first)
    wait_for(lambda: settle_left(first) == 0 and settle_left(second) == 0, timeout=full,
             message="both windows over")  # fmt: skip
    assert time.monotonic() - back < full / 2, "ended early: every worker is back"


def test_a_waiter_in_the_window_is_granted_as_soon_as_it_ends(
    own_redis: RedisServer, make_runtime: MakeRuntime
) -> None:
    first = make_runtime("host:A", lease_ttl_ms=TTL_MS)
    second = make_runtime("host:B", lease_ttl_ms=TTL_MS)
    outage(own_redis, first, second)
    own_redis.start()
    wait_for(lambda: not first.degraded, timeout=5, message="the first back")
    assert settle_left(first) > 0
    ended = time.monotonic() + settle_left(first)  # the window's whole length: it only shortens
    granted: list[float] = []

    def acquire() -> None:
        lease = first.semaphore.acquire(Holder("host:A", "waiter"), timeout=10)
        granted.append(time.monotonic())
        lease.release()

    waiter = threading.Thread(target=acquire)
    waiter.start()
    try:
        back = back_on_redis(second)
        wait_for(lambda: settle_left(first) == 0, timeout=full_window(first), message="over")
        waiter.join(timeout=10)
        assert granted, "the waiter got its permit"
        assert granted[0] < back + full_window(first) / 2, "granted once every worker was back"
        assert granted[0] < ended, "not held to the window's whole length"
    finally:
        waiter.join(timeout=10)


def test_a_worker_still_away_keeps_the_window_its_whole_length(
    own_redis: RedisServer, cut_off: tuple[Any, int], make_runtime: MakeRuntime
) -> None:
    proxy, port = cut_off
    first = make_runtime("host:A", lease_ttl_ms=TTL_MS)
    second = make_runtime("host:B", redis_url=f"redis://127.0.0.1:{port}/0", lease_ttl_ms=TTL_MS)
    outage(own_redis, first, second)
    proxy.disable()  # the second stays away when Redis comes back
    own_redis.start()
    back = back_on_redis(first)
    full = full_window(first)
    time.sleep(full / 2)
    assert second.degraded
    assert settle_left(first) > 0, "the second may hold permits Redis forgot: keep waiting"
    runs_its_whole_length(first, back)


def test_a_mark_from_before_the_outage_does_not_count(
    own_redis: RedisServer, cut_off: tuple[Any, int], make_runtime: MakeRuntime
) -> None:
    """The second said it was back after the first outage; in the next one it stays cut off
    when Redis comes back: its old mark must not end the first's window."""
    proxy, port = cut_off
    first = make_runtime("host:A", lease_ttl_ms=TTL_MS)
    second = make_runtime("host:B", redis_url=f"redis://127.0.0.1:{port}/0", lease_ttl_ms=TTL_MS)
    outage(own_redis, first, second)
    own_redis.start()
    back_on_redis(first, second)
    wait_for(lambda: settle_left(first) == 0 and settle_left(second) == 0, timeout=5,
             message="both windows over")  # fmt: skip
    own_redis.stop_for_now()
    proxy.disable()
    degrade(first, second)
    own_redis.start()
    back = back_on_redis(first)
    full = full_window(first)
    time.sleep(full / 2)
    assert second.degraded
    assert settle_left(first) > 0, "the second's mark is older than this outage"
    runs_its_whole_length(first, back)


def test_after_redis_lost_its_data_the_window_runs_its_whole_length(
    own_redis: RedisServer, make_runtime: MakeRuntime
) -> None:
    """The registry went with the data: it cannot say who else holds permits."""
    first = make_runtime("host:A", lease_ttl_ms=TTL_MS)
    second = make_runtime("host:B", lease_ttl_ms=TTL_MS)
    own_redis.stop()
    degrade(first, second)
    own_redis.start()
    back = back_on_redis(first)
    back_on_redis(second)
    full = full_window(first)
    time.sleep(full / 2)
    assert settle_left(first) > 0
    assert settle_left(second) > 0
    runs_its_whole_length(first, back)


def test_a_worker_that_lost_redis_well_before_this_one_noticed_still_counts(
    own_redis: RedisServer, cut_off: tuple[Any, int], make_runtime: MakeRuntime
) -> None:
    """Short heartbeats: the second trips at once and its last beat lapses before the idle
    first notices (by a timeout); it stays away when Redis comes back. It may hold permits
    Redis forgot, so the first's window must not end early."""
    proxy, port = cut_off
    ttl = 600
    first = make_runtime("host:A", lease_ttl_ms=ttl)
    second = make_runtime("host:B", redis_url=f"redis://127.0.0.1:{port}/0", lease_ttl_ms=ttl)
    own_redis.pause()
    degrade(second)
    wait_for(lambda: first.degraded, timeout=10, message="the idle first degraded")
    proxy.disable()
    own_redis.resume()
    back = back_on_redis(first)
    full = full_window(first)
    time.sleep(full / 2)
    assert second.degraded
    assert settle_left(first) > 0, "the second may hold permits Redis forgot"
    runs_its_whole_length(first, back)


def test_redis_losing_its_data_mid_window_never_ends_it_early(
    own_redis: RedisServer, own_observer: Any, cut_off: tuple[Any, int], make_runtime: MakeRuntime
) -> None:
    """Flushed while the second is still away: the registry forgets it, and only the first's
    own mark, gone too, tells the look that it cannot judge."""
    proxy, port = cut_off
    first = make_runtime("host:A", lease_ttl_ms=TTL_MS)
    second = make_runtime("host:B", redis_url=f"redis://127.0.0.1:{port}/0", lease_ttl_ms=TTL_MS)
    outage(own_redis, first, second)
    proxy.disable()
    own_redis.start()
    back_on_redis(first)
    assert first.failover is not None
    wait_for(lambda: first.failover is not None and first.failover._settle_look is not None,
             timeout=2, message="the first marked and looking")  # fmt: skip
    own_observer.flushall()
    watched_until = time.monotonic() + full_window(first) / 2
    while time.monotonic() < watched_until:
        assert settle_left(first) > 0, "ended early on a registry that forgot the second"
        time.sleep(0.01)
