"""The Redis side of the admin routes against a real redis-server: the permit queue read, a
permit released by its token (handed over to the next waiter across processes' semaphores),
and the worker registry's published states and drain orders."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis

from taskmon.harness.processes import wait_until
from taskmon.harness.redis_server import RedisServer
from taskmon.ports import Holder, Lease
from taskmon.redis.keys import Keys
from taskmon.redis.workers import WorkerRegistry
from taskmon.worker_state import WorkerState
from tests.support.redis_wiring import SemaphoreWiring, wire_semaphore

pytestmark = pytest.mark.redis


@pytest.fixture
def two(redis_server: RedisServer, keys: Keys) -> Iterator[tuple[SemaphoreWiring, ...]]:
    """Two workers' semaphores on one cap of 1."""
    made = [wire_semaphore(redis_server.url, keys, limit=1, ttl_s=30) for _ in range(2)]
    for wiring in made:
        wiring.semaphore.configure_limit()
    try:
        yield tuple(made)
    finally:
        for wiring in made:
            wiring.close()


def test_a_permit_released_by_token_is_handed_to_the_next_waiter_of_another_worker(
    two: tuple[SemaphoreWiring, ...],
) -> None:
    a, b = two[0].semaphore, two[1].semaphore
    stuck = a.acquire(Holder("host:1", "stuck"), timeout=0, token="stuck")
    granted: list[Lease] = []
    waiter = threading.Thread(
        target=lambda: granted.append(b.acquire(Holder("host:2", "next"), timeout=20, token="n"))
    )
    waiter.start()
    wait_until(lambda: len(a.waiters()) == 1, timeout=10, what="the waiter queued")
    [queued] = a.waiters()
    assert (queued.holder, queued.token, queued.position, queued.waiting_s) == (
        Holder("host:2", "next"), "n", 1, None
    )  # fmt: skip
    # Released from the other side (the admin request lands on any worker).
    released = b.revoke("stuck")
    assert released is not None
    assert (released.holder, released.fencing) == (Holder("host:1", "stuck"), stuck.fencing)
    waiter.join(10)
    assert granted
    assert granted[0].holder.task_id == "next", "handed over to the next waiter"
    assert [h.token for h in a.holders()] == ["n"]
    assert a.waiters() == []
    assert stuck.renew() is False, "the stuck holder finds its lease lost"
    assert stuck.release() is False, "and its late release counts nothing"
    assert b.revoke("stuck") is None
    assert b.revoke("unknown") is None
    granted[0].release()


def state(worker: str, in_flight: int = 0, draining: bool = False) -> WorkerState:
    return WorkerState(worker, "redis", False, in_flight, 2, draining)


def test_heartbeats_publish_states_and_carry_drain_orders(
    redis_client: redis.Redis, keys: Keys
) -> None:
    one = WorkerRegistry(redis_client, keys, "host:1", ttl_s=30)
    two = WorkerRegistry(redis_client, keys, "host:2", ttl_s=30)
    drains: list[bool] = []
    one.report, two.report = (lambda: state("host:1", 3)), (lambda: state("host:2", 1))

    def on_drain(ordered: bool) -> bool:
        drains.append(ordered)
        return False  # as if the state had not changed: one heartbeat script each

    one.on_drain = on_drain
    one.heartbeat()
    two.heartbeat()
    listed = one.published()
    assert [p.state.worker for p in listed] == ["host:1", "host:2"]
    assert [(p.state.in_flight, p.state.pending, p.alive) for p in listed] == [
        (3, 2, True), (1, 2, True)
    ]  # fmt: skip
    assert all(0 <= p.state.last_seen_s < 5 for p in listed)
    assert drains == [False]

    assert two.order_drain("host:1", True) is True  # ordered through another worker
    assert one.published()[0].drain_ordered_s_ago is not None
    one.heartbeat()
    assert drains == [False, True], "the target reads its order at its heartbeat"
    assert two.order_drain("host:1", False) is False
    one.heartbeat()
    assert drains == [False, True, False]
    assert two.order_drain("host:gone", True) is None, "no such worker alive"

    one.leave()
    one.heartbeat()  # a late beat (a drain request's) after the worker left
    assert [p.state.worker for p in two.published()] == ["host:2"], "a worker that left is gone"
    assert two.alive() == [two.identity]
    assert two.order_drain("host:1", True) is None, "nor can it be drained"


def test_a_worker_not_heard_from_shows_as_such_until_its_record_is_dropped(
    redis_client: redis.Redis, keys: Keys
) -> None:
    silent = WorkerRegistry(redis_client, keys, "host:silent", ttl_s=0.2)
    live = WorkerRegistry(redis_client, keys, "host:live", ttl_s=0.2)
    silent.report, live.report = (lambda: state("host:silent")), (lambda: state("host:live"))
    silent.heartbeat()
    live.heartbeat()

    def entry() -> list[tuple[bool, float]]:
        return [(p.alive, p.state.last_seen_s) for p in live.published()
                if p.state.worker == "host:silent"]  # fmt: skip

    def expired() -> bool:
        found = entry()
        return bool(found) and not found[0][0]

    wait_until(expired, timeout=5, what="the silent one expired")
    assert entry()[0][1] >= 0.2, "listed as not heard from, with its age"

    def dropped() -> bool:
        live.heartbeat()  # anyone's heartbeat drops a record silent for six TTLs
        return entry() == []

    wait_until(dropped, timeout=5, what="the record dropped")
