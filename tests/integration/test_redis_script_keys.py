"""Every script gets the keys its adapter's SCRIPT_KEYS names, in that order, on real calls.

tests/unit/test_lua_scripts.py holds each script's header to its table; this holds the Python
side to it: each adapter's calls are recorded on their way to a real Redis (the scripts run as
usual) and each key passed must be the one the table names at its place.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.commands.core import Script

from taskmon.domain import TaskError, TaskState
from taskmon.harness.redis_server import RedisServer
from taskmon.ports import Holder, PermitTimeout
from taskmon.redis.epoch import EpochWatch
from taskmon.redis.figures import SCRIPT_KEYS as FIGURES_SCRIPTS
from taskmon.redis.figures import RedisFigures
from taskmon.redis.keys import Keys
from taskmon.redis.monitor import SCRIPT_KEYS as MONITOR_SCRIPTS
from taskmon.redis.scripts import ScriptKeys, ScriptSet
from taskmon.redis.semaphore import SCRIPT_KEYS as SEMAPHORE_SCRIPTS
from taskmon.redis.workers import SCRIPT_KEYS as WORKERS_SCRIPTS
from taskmon.redis.workers import WorkerRegistry
from tests.support.redis_wiring import MonitorWiring, SemaphoreWiring, wire_monitor, wire_semaphore
from tests.support.tasks import make_task

pytestmark = pytest.mark.redis

# A key a script may go without, when it is the last: only a task with an Idempotency-Key
# passes its key.
OPTIONAL_LAST = {"idempotency"}


@dataclass
class Recorded:
    calls: list[tuple[str, list[str]]] = field(default_factory=list)

    def wrap(self, scripts: ScriptSet) -> None:
        """Record every call of the set's scripts; each still runs on Redis as before."""
        for name, script in list(scripts._scripts.items()):
            scripts._scripts[name] = self._recording(name, script)  # type: ignore[assignment]

    def _recording(self, name: str, script: Script) -> Callable[..., Any]:
        def call(keys: list[str] | None = None, args: Any = None, client: Any = None) -> Any:
            self.calls.append((name, list(keys or [])))
            return script(keys=keys, args=args, client=client)

        return call


def key_pattern(keys: Keys, attribute: str) -> str:
    """A regex matching every name `keys.<attribute>` can build."""
    if attribute == "state_index":
        return "|".join(
            re.escape(keys.state_index(s)) for s in (TaskState.QUEUED, TaskState.RUNNING)
        )
    built: object = getattr(keys, attribute)
    if isinstance(built, str):
        return re.escape(built)
    assert callable(built)
    return re.escape(str(built("PLACEHOLDER"))).replace("PLACEHOLDER", r"[^:]+")


def check(table: ScriptKeys, recorded: Recorded, keys: Keys) -> None:
    assert {name for name, _ in recorded.calls} == set(table), "every script was called"
    for name, passed in recorded.calls:
        wanted = table[name]
        if len(passed) == len(wanted) - 1 and wanted[-1] in OPTIONAL_LAST:
            wanted = wanted[:-1]
        assert len(passed) == len(wanted), f"{name}: {passed} for {wanted}"
        for key, attribute in zip(passed, wanted, strict=True):
            assert re.fullmatch(key_pattern(keys, attribute), key), (
                f"{name}: {key} is no {attribute}"
            )


@dataclass
class Rig:
    server: RedisServer
    keys: Keys
    opened: list[MonitorWiring | SemaphoreWiring] = field(default_factory=list)


@pytest.fixture
def rig(redis_server: RedisServer, keys: Keys) -> Iterator[Rig]:
    made = Rig(redis_server, keys)
    try:
        yield made
    finally:
        for wiring in made.opened:
            wiring.close()


def test_the_monitor_passes_the_keys_its_table_names(rig: Rig) -> None:
    wiring = wire_monitor(rig.server.url, rig.keys)
    rig.opened.append(wiring)
    monitor, recorded = wiring.monitor, Recorded()
    recorded.wrap(monitor._scripts)
    keyed, plain = make_task("keyed", key="k-1"), make_task("plain")
    for task in (keyed, plain):
        assert monitor.start(task).task == task
        running = monitor.transition(
            task.task_id, expected_version=1, state=TaskState.RUNNING, now=2.0
        )
        assert running is not None
    assert monitor.transition(keyed.task_id, expected_version=2, state=TaskState.DONE, now=3.0)
    error = TaskError("engine_error", "boom")
    assert monitor.transition(
        plain.task_id, expected_version=2, state=TaskState.FAILED, now=3.0, error=error
    )
    assert monitor.settle_start(make_task("never started")) is False
    # A write-back of a task Redis does not have (restarted empty), with and without a key.
    assert monitor.restore(make_task("written back", key="k-2")).written
    assert monitor.restore(make_task("written back too")).written
    check(MONITOR_SCRIPTS, recorded, rig.keys)


def test_the_semaphore_passes_the_keys_its_table_names(rig: Rig) -> None:
    wiring = wire_semaphore(rig.server.url, rig.keys, limit=1)
    rig.opened.append(wiring)
    sem, recorded = wiring.semaphore, Recorded()
    recorded.wrap(sem._scripts)
    assert sem.configure_limit() == 1  # sem_upgrade, then sem_set_limit
    lease = sem.acquire(Holder("w:1", "a"), timeout=0, token="a")
    with pytest.raises(PermitTimeout):
        sem.acquire(Holder("w:1", "b"), timeout=0.05, token="b")  # queues, then leaves
    assert lease.renew() is True
    assert [h.token for h in sem.holders()] == ["a"]
    assert sem.in_use() == 1
    assert sem.waiters() == []
    sem.set_limit(2)
    assert sem.reclaim(Holder("w:1", "c"), "c").fencing > lease.fencing  # over the limit
    assert lease.release() is True
    check(SEMAPHORE_SCRIPTS, recorded, rig.keys)


def test_the_worker_registry_passes_the_keys_its_table_names(rig: Rig) -> None:
    wiring = wire_monitor(rig.server.url, rig.keys)
    rig.opened.append(wiring)
    registry, recorded = WorkerRegistry(wiring.client, rig.keys, "host:1", ttl_s=10), Recorded()
    recorded.wrap(registry._scripts)
    registry.heartbeat()
    assert registry.expired() == []
    epoch = EpochWatch(wiring.client, rig.keys)
    epoch.changed()  # sets the dataset's id and reads it
    assert registry.mark_promoted("another dataset") == -1, "nothing marked"
    mark = registry.mark_promoted(epoch.seen)
    assert mark > 0
    assert registry.others_not_back(mark - 1000, mark) == 0
    assert registry.order_drain("host:1", True) is True
    assert [p.state.worker for p in registry.published()] == []  # nothing published yet
    check(WORKERS_SCRIPTS, recorded, rig.keys)


def test_the_figures_pass_the_keys_their_table_names(rig: Rig) -> None:
    wiring = wire_monitor(rig.server.url, rig.keys)
    rig.opened.append(wiring)
    figures, recorded = RedisFigures(wiring.client, rig.keys), Recorded()
    recorded.wrap(figures._scripts)
    assert figures.read().counts.total == 0
    assert figures.keyspace() is not None  # a first pass: a small keyspace ends in one step
    check(FIGURES_SCRIPTS, recorded, rig.keys)
