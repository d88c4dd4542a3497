"""The global figures /metrics exports, read from a real redis-server: tasks in known states, a
semaphore with holders and a waiter, workers alive and gone, the namespace's keys counted by a
bounded SCAN shared between workers, and a collector that answers `taskmon_redis_up 0` at once
when Redis is cut, logging one line per outage."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from taskmon.config import Settings
from taskmon.domain import Task, TaskRequest, TaskState
from taskmon.global_metrics import GlobalCollector
from taskmon.harness.redis_server import RedisServer
from taskmon.ports import Holder, KeyspaceFigures
from taskmon.redis.connection import call_budget_s, make_client
from taskmon.redis.figures import RedisFigures
from taskmon.redis.keys import Keys
from taskmon.redis.workers import WorkerRegistry
from tests.support.failover_rig import KEYS, ended
from tests.support.redis_wiring import MonitorWiring, wire_monitor, wire_semaphore
from tests.support.tasks import run_to
from tests.support.timing import run_threads, wait_for

pytestmark = pytest.mark.redis


@pytest.fixture
def wiring(redis_server: RedisServer, keys: Keys) -> Iterator[MonitorWiring]:
    made = wire_monitor(redis_server.url, keys)
    try:
        yield made
    finally:
        made.close()


def task(text: str, *, age_s: float = 0.0, key: str | None = None) -> Task:
    return Task.create(
        TaskRequest(text, None), worker="w:1", now=time.time() - age_s, idempotency_key=key
    )


def samples(collector: GlobalCollector) -> dict[str, float]:
    """`name{labels}` -> value, as Prometheus would scrape it."""
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return found


def test_the_figures_are_the_stores_tasks_permits_waiters_and_workers(
    wiring: MonitorWiring, redis_server: RedisServer, keys: Keys, redis_client: redis.Redis
) -> None:
    monitor = wiring.monitor
    oldest = task("oldest queued", age_s=30, key="k-oldest")
    for made, final in [
        (oldest, TaskState.QUEUED), (task("queued"), TaskState.QUEUED),
        (task("running"), TaskState.RUNNING), (task("done 1", key="k-1"), TaskState.DONE),
        (task("done 2"), TaskState.DONE), (task("done 3"), TaskState.DONE),
        (task("failed"), TaskState.FAILED),
    ]:  # fmt: skip
        assert monitor.start(made).task == made
        run_to(monitor, made, final)
    sem = wire_semaphore(redis_server.url, keys, limit=2)
    try:
        sem.semaphore.configure_limit()
        sem.semaphore.acquire(Holder("w:1", "a"), timeout=0, token="a")
        sem.semaphore.acquire(Holder("w:1", "b"), timeout=0, token="b")
        assert not sem.semaphore.do_acquire("c", Holder("w:1", "c")).granted, "queued"
        for worker in ("host:1", "host:2", "host:3"):
            WorkerRegistry(wiring.client, keys, worker, ttl_s=30).heartbeat()
        WorkerRegistry(wiring.client, keys, "host:3", ttl_s=30).leave()

        figures = RedisFigures(wiring.client, keys).read()
    finally:
        sem.close()
    counts = figures.counts
    assert (counts.queued, counts.running, counts.done, counts.failed) == (2, 1, 3, 1)
    assert (figures.in_use, figures.limit, figures.waiters, figures.workers_alive) == (2, 2, 1, 2)
    assert figures.oldest_queued_age_s is not None
    assert 29 <= figures.oldest_queued_age_s <= 40

    keyspace = RedisFigures(wiring.client, keys).keyspace()
    assert keyspace is not None
    ours = list(redis_client.scan_iter(match=keys.namespace_pattern))
    ours.remove(keys.metrics_keyspace)  # written by the pass, after it counted
    assert keyspace.keys == len(ours)
    assert (keyspace.tasks, keyspace.idempotency_keys) == (7, 2)


def test_an_empty_namespace_reads_as_zeros_and_no_cap(wiring: MonitorWiring, keys: Keys) -> None:
    figures = RedisFigures(wiring.client, keys).read()
    assert figures.counts.total == 0
    assert (figures.limit, figures.oldest_queued_age_s, figures.workers_alive) == (None, None, 0)


def test_one_pass_is_shared_by_every_worker_until_it_expires(
    wiring: MonitorWiring, redis_server: RedisServer, keys: Keys
) -> None:
    wiring.monitor.start(task("one", key="k"))
    other = make_client(Settings(redis_url=redis_server.url), client_name="test-other")
    try:
        first = RedisFigures(wiring.client, keys, cache_s=0.5).keyspace()
        wiring.monitor.start(task("two"))
        second = RedisFigures(other, keys, cache_s=0.5).keyspace()  # another worker's
        assert first is not None
        assert second is not None
        # task, key, queued index, counters, recent index
        assert (second.keys, second.tasks) == (first.keys, first.tasks) == (5, 1)
        time.sleep(0.6)  # the cache's own expiry is what this waits for
        third = RedisFigures(other, keys, cache_s=0.5).keyspace()
        assert third is not None
        # ... the second task, and the hash that keeps the pass
        assert (third.keys, third.tasks) == (7, 2)
    finally:
        other.close()


def test_a_pass_longer_than_a_scrape_goes_on_at_the_next_and_is_never_counted_twice(
    wiring: MonitorWiring, keys: Keys, redis_client: redis.Redis
) -> None:
    for i in range(50):
        redis_client.set(keys.idempotency(f"k-{i}"), "x")
    # One key a SCAN step, one step a scrape: dozens of scrapes to a pass.
    slow = RedisFigures(wiring.client, keys, scan_count=1, budget_s=0.0)
    assert slow.keyspace() is None, "no pass complete yet: nothing to report"
    assert redis_client.hget(keys.metrics_keyspace, "cursor") not in (None, "0"), "under way"
    # Four workers scraping at once step the same pass: a step raced by another is dropped.
    results: list[KeyspaceFigures] = []

    def scrape_until_complete() -> None:
        for _ in range(2000):
            done = slow.keyspace()
            if done is not None:
                results.append(done)
                return
        raise AssertionError("the pass never completed")

    run_threads([scrape_until_complete] * 4)
    # The 50 keys once each, and the hash that keeps the pass.
    assert {(r.keys, r.idempotency_keys) for r in results} == {(51, 50)}, "each key once"
    fast = RedisFigures(wiring.client, keys).keyspace()
    assert fast is not None
    assert fast.idempotency_keys == 50, "the stored pass, the same for every worker"


def test_a_cut_redis_gives_redis_up_0_within_the_call_budget_and_one_log_line(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(redis_url=own_redis.url)
    client = make_client(settings, client_name="test-scrape")
    tripped: list[BaseException] = []
    collector = GlobalCollector(RedisFigures(client, Keys("cut")), lambda: False, tripped.append)
    try:
        up = samples(collector)
        assert up["taskmon_redis_up"] == 1
        assert up['taskmon_global_tasks{state="queued"}'] == 0
        own_redis.stop_for_now()
        caplog.set_level(logging.INFO, logger="taskmon.global_metrics")
        for _ in range(3):
            started = time.monotonic()
            down = samples(collector)
            assert time.monotonic() - started < call_budget_s(settings) + 0.5
            assert down["taskmon_redis_up"] == 0
            assert not [name for name in down if name.startswith("taskmon_global_tasks")]
            assert "taskmon_global_scrape_duration_seconds" in down
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, "one line per outage"
        assert "taskmon_redis_up 0" in warnings[0].getMessage()
        assert len(tripped) == 3, "each failed read trips the failover (a no-op once tripped)"
        own_redis.start()
        assert samples(collector)["taskmon_redis_up"] == 1
        assert any("again" in r.getMessage() for r in caplog.records)
    finally:
        client.close()


def test_a_degraded_worker_does_not_even_ask(own_redis: RedisServer) -> None:
    client = make_client(Settings(redis_url=own_redis.url), client_name="test-degraded")
    try:
        collector = GlobalCollector(RedisFigures(client, Keys("d")), lambda: True)
        own_redis.pause()
        started = time.monotonic()
        assert samples(collector)["taskmon_redis_up"] == 0
        assert time.monotonic() - started < 0.1
    finally:
        own_redis.resume()
        client.close()


def test_tasks_a_reaper_fails_are_counted_by_the_worker_that_reaped_them(
    make_runtime: Any, own_observer: redis.Redis
) -> None:
    abandoned = {"state": "failed", "code": "abandoned"}
    before = REGISTRY.get_sample_value("taskmon_tasks_finished_total", abandoned) or 0.0
    rt = make_runtime(lease_ttl_ms=600)
    dead = WorkerRegistry(own_observer, KEYS, "host:dead", ttl_s=0.3)
    dead.heartbeat()
    dead.leave()
    orphan = Task.create(TaskRequest("of a dead worker", None), worker="host:dead", now=time.time())
    assert rt.monitor.start(orphan).task == orphan
    wait_for(lambda: ended(rt, orphan.task_id), message="the reaper failed the task")
    assert REGISTRY.get_sample_value("taskmon_tasks_finished_total", abandoned) == before + 1
