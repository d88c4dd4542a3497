"""RedisEventHub against a real redis-server: events across workers, fan-out, reconnection."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import redis

from taskmon.domain import Task, TaskEvent, TaskRequest, TaskState
from taskmon.harness.redis_server import RedisServer
from taskmon.ports import BackendUnavailable
from taskmon.redis.hub import RedisSubscription
from taskmon.redis.keys import Keys
from tests.support.redis_wiring import MonitorWiring, wire_monitor
from tests.support.timing import WAIT_S, wait_for

pytestmark = pytest.mark.redis

RUNNING, DONE = TaskState.RUNNING, TaskState.DONE


def make_task(text: str = "hello", task_id: str | None = None) -> Task:
    return Task.create(TaskRequest(text), worker="w:b", now=10.0, task_id=task_id)


def next_event(subscription: RedisSubscription) -> TaskEvent:
    event = subscription.get(timeout=WAIT_S)
    assert event is not None, "no event arrived in time"
    return event


def numsub(client: redis.Redis, channel: str) -> int:
    return int(client.pubsub_numsub(channel)[0][1])


def unsubscribed(client: redis.Redis, channel: str) -> bool:
    return numsub(client, channel) == 0


def test_a_worker_receives_events_of_a_task_another_worker_moves(
    make_monitor_wiring: Callable[..., MonitorWiring],
) -> None:
    a, b = make_monitor_wiring(name="a"), make_monitor_wiring(name="b")
    task = make_task("grüße")
    with a.monitor.subscribe(task.task_id) as events:
        b.monitor.start(task)
        running = b.monitor.transition(task.task_id, expected_version=1, state=RUNNING, now=11)
        assert running is not None
        done = b.monitor.transition(task.task_id, expected_version=2, state=DONE, now=12)
        assert done is not None
        received = [next_event(events) for _ in range(3)]
        assert events.get(timeout=0.1) is None
    assert [e.task for e in received] == [task, running, done]
    assert [e.terminal for e in received] == [False, False, True]


def test_every_local_subscription_gets_every_event_of_its_task_only(
    make_monitor_wiring: Callable[..., MonitorWiring], redis_client: redis.Redis, keys: Keys
) -> None:
    a, b = make_monitor_wiring(name="a"), make_monitor_wiring(name="b")
    mine, other = make_task("mine"), make_task("other")
    subscriptions = [a.hub.subscribe(mine.task_id) for _ in range(3)]
    assert numsub(redis_client, keys.task_channel(mine.task_id)) == 1, "one SUBSCRIBE per task"
    b.monitor.start(other)
    b.monitor.start(mine)
    running = b.monitor.transition(mine.task_id, expected_version=1, state=RUNNING, now=1)
    for subscription in subscriptions:
        assert [next_event(subscription).task for _ in range(2)] == [mine, running]
        assert subscription.get(timeout=0) is None
        subscription.close()


def test_close_detaches_and_the_last_close_unsubscribes(
    make_monitor_wiring: Callable[..., MonitorWiring], redis_client: redis.Redis, keys: Keys
) -> None:
    a, b = make_monitor_wiring(name="a"), make_monitor_wiring(name="b")
    task = make_task()
    channel = keys.task_channel(task.task_id)
    kept, closed = a.hub.subscribe(task.task_id), a.hub.subscribe(task.task_id)
    assert a.hub.subscriber_count() == 2
    closed.close()
    closed.close()  # closing twice is harmless
    assert a.hub.subscriber_count() == 1
    assert numsub(redis_client, channel) == 1
    b.monitor.start(task)
    assert next_event(kept).task == task
    assert closed.get(timeout=0.1) is None
    kept.close()
    assert a.hub.subscriber_count() == 0
    wait_for(lambda: numsub(redis_client, channel) == 0, message="the channel to be unsubscribed")
    # A task subscribed again after its channel was dropped gets events again.
    with a.hub.subscribe(task.task_id) as again:
        b.monitor.transition(task.task_id, expected_version=1, state=RUNNING, now=1)
        assert next_event(again).version == 2


def test_publish_reaches_other_workers_and_close_drops_everything(
    make_monitor_wiring: Callable[..., MonitorWiring], redis_client: redis.Redis, keys: Keys
) -> None:
    a, b = make_monitor_wiring(name="a"), make_monitor_wiring(name="b")
    first, second = make_task("first"), make_task("second")
    subscription = a.hub.subscribe(first.task_id)
    a.hub.subscribe(second.task_id)
    b.hub.publish(TaskEvent(first))
    assert next_event(subscription) == TaskEvent(first)
    a.monitor.close()  # closes the hub: every local subscription is detached
    assert a.hub.subscriber_count() == 0
    for task in (first, second):
        channel = keys.task_channel(task.task_id)
        wait_for(partial(unsubscribed, redis_client, channel), message="unsubscribed")
    b.hub.publish(TaskEvent(first))
    assert subscription.get(timeout=0.1) is None
    subscription.close()  # still safe after the hub closed


def test_a_malformed_payload_is_dropped_and_delivery_goes_on(
    make_monitor_wiring: Callable[..., MonitorWiring], redis_client: redis.Redis, keys: Keys
) -> None:
    a, b = make_monitor_wiring(name="a"), make_monitor_wiring(name="b")
    task = make_task()
    with a.hub.subscribe(task.task_id) as events:
        redis_client.publish(keys.task_channel(task.task_id), "not an event")
        redis_client.publish(keys.task_channel(task.task_id), '{"state": "done"}')
        b.monitor.start(task)
        assert next_event(events).task == task
        assert events.get(timeout=0.1) is None


def test_reconnection_resubscribes_and_redelivers_the_snapshot(tmp_path: Path, keys: Keys) -> None:
    """Pub/sub forgets what was published while away; the hub re-reads what it cares about.

    A gate hook, registered before the hub's, holds A's subscriber right after it resubscribed.
    B changes the task meanwhile; the snapshot the hub then re-reads must come first (the
    buffered pub/sub messages only follow it), which no pub/sub delivery could produce.
    """
    reconnected, gate = threading.Event(), threading.Event()

    def hold() -> None:
        reconnected.set()
        gate.wait(WAIT_S)

    with RedisServer(workdir=tmp_path) as server:
        a = wire_monitor(server.url, keys, name="a", first_hook=hold)
        b = wire_monitor(server.url, keys, name="b")
        try:
            task = make_task()
            events = a.hub.subscribe(task.task_id)
            b.monitor.start(task)
            assert next_event(events).task == task

            # Down longer than the client's retry window, so the subscriber sees the outage.
            # The data is gone, like a Redis without persistence.
            server.restart(down_for_s=0.5)
            assert reconnected.wait(WAIT_S), "A's subscriber never reconnected"
            assert b.monitor.get(task.task_id) is None
            again = make_task(task_id=task.task_id)
            b.monitor.start(again)
            running = b.monitor.transition(task.task_id, expected_version=1, state=RUNNING, now=1)
            assert running is not None
            gate.set()

            assert next_event(events).task == running, "the re-read snapshot comes first"
            assert [next_event(events).task for _ in range(2)] == [again, running]
            done = b.monitor.transition(task.task_id, expected_version=2, state=DONE, now=2)
            assert done is not None
            assert next_event(events).task == done, "live events flow again"
            events.close()
        finally:
            gate.set()
            a.close()
            b.close()


def test_subscribe_fails_cleanly_while_redis_is_down_and_works_after(
    tmp_path: Path, keys: Keys
) -> None:
    with RedisServer(workdir=tmp_path) as server:
        a = wire_monitor(server.url, keys, name="a", confirm_timeout_s=0.3)
        b = wire_monitor(server.url, keys, name="b")
        try:
            task = make_task()
            server.stop()
            with pytest.raises(BackendUnavailable, match="TASKMON_REDIS_URL"):
                a.hub.subscribe(task.task_id)
            assert a.hub.subscriber_count() == 0
            server.start()
            with a.hub.subscribe(task.task_id) as events:
                b.monitor.start(task)
                assert next_event(events).task == task
                assert events.get(timeout=0.2) is None, "each event arrives once"
        finally:
            a.close()
            b.close()


def test_a_subscribe_after_a_long_outage_does_not_wait_out_the_backoff(
    tmp_path: Path, keys: Keys
) -> None:
    """The reader backs off up to 2 s between attempts; a listen() cuts that short.

    Without it, a stream opened just after Redis came back would fail its 0.3 s confirm
    timeout whenever the reader was asleep in a long backoff (the worker then degrades).
    """
    with RedisServer(workdir=tmp_path) as server:
        a = wire_monitor(server.url, keys, name="a", confirm_timeout_s=0.3)
        b = wire_monitor(server.url, keys, name="b")
        try:
            first = make_task()
            with a.hub.subscribe(first.task_id):
                server.stop()
                # Down long enough for the backoff to reach its 2 s ceiling (0.05 doubling).
                wait_for(lambda: not a.hub.connected, message="A's subscriber to see the outage")
                time.sleep(3.5)  # the outage itself, not a wait for readiness
                server.start()
                task = make_task()
                with a.hub.subscribe(task.task_id) as events:
                    b.monitor.start(task)
                    assert next_event(events).task == task
        finally:
            a.close()
            b.close()


def test_a_reset_connection_also_redelivers_the_snapshot(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys
) -> None:
    """A proxy, a load balancer or `CLIENT KILL` resets the connection; Redis stays up.

    Whatever was published until the subscriber is back is lost, so the hub must re-read the
    snapshot of its tasks even though nothing was published since.
    """
    name = f"a-{keys.prefix}"
    a = wire_monitor(redis_server.url, keys, name=name)
    b = wire_monitor(redis_server.url, keys, name="b")
    try:
        task = make_task()
        b.monitor.start(task)
        with a.hub.subscribe(task.task_id) as events:
            ids = [
                c["id"]
                for c in redis_client.client_list()
                if c["name"] == f"test-{name}" and int(c["sub"]) > 0
            ]
            assert len(ids) == 1, "A has one pub/sub connection"
            redis_client.client_kill_filter(_id=ids[0])
            event = events.get(timeout=3)
            assert event is not None, "the snapshot was not re-read after the reset"
            assert event.task == task
    finally:
        a.close()
        b.close()
