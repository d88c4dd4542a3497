"""The composition root on a real redis-server: the Redis wiring, and a close that lets go of
every connection and of the worker registry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from taskmon.config import load_settings
from taskmon.domain import TaskState
from taskmon.failover import FailoverSemaphore, FailoverTaskMonitor
from taskmon.harness.redis_server import RedisServer
from taskmon.redis.keys import Keys
from taskmon.runtime import build_runtime
from tests.support.timing import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("clean_taskmon_env")]


def clients_named(client: redis.Redis, worker_id: str) -> list[str]:
    return [c["name"] for c in client.client_list() if worker_id in c.get("name", "")]


def test_redis_wiring_shares_one_store_and_closes_every_connection(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    settings = load_settings(
        {
            "backend": "redis",
            "redis_url": redis_server.url,
            "key_prefix": keys.prefix,
            "engine": "tone",
            "tone_ms_per_char": 0,
            "result_dir": tmp_path / "results",
            "concurrency_limit": 2,
        }
    )
    rt = build_runtime(settings, worker_id="host:42")
    try:
        assert isinstance(rt.monitor, FailoverTaskMonitor)
        assert isinstance(rt.semaphore, FailoverSemaphore)
        assert (rt.monitor.backend, rt.degraded) == ("redis", False)
        assert rt.backend_target == redis_server.url
        assert rt.semaphore.limit() == 2
        assert {"taskmon:host:42", "taskmon-sub:host:42"} <= set(
            clients_named(redis_client, "host:42")
        )
        assert re.fullmatch("[0-9a-f]{8}", rt.boot), "a boot id of 8 hex digits"
        identity = f"host:42/{rt.boot}"
        assert redis_client.zscore(keys.workers, identity) is not None, "registered at start"
        task = rt.service.submit({"text": "through redis"}).task
        stored = redis_client.hmget(keys.task(task.task_id), ["state", "worker", "boot"])
        assert stored[0] in {"queued", "running", "done"}, "the task is in Redis, not in memory"
        assert stored[1:] == ["host:42", rt.boot], "the public name, and the boot beside it"
        assert task.status()["worker"] == "host:42"
        wait_for(lambda: (t := rt.monitor.get(task.task_id)) and t.state is TaskState.DONE)
    finally:
        rt.close(wait=True)
    wait_for(lambda: not clients_named(redis_client, "host:42"), message="every socket closed")
    deadline = redis_client.zscore(keys.workers, identity)
    now_ms = int(redis_client.time()[0]) * 1000
    assert deadline is not None
    assert deadline <= now_ms + 1000, "leaving the registry expires the worker at once"


def test_a_build_that_fails_after_the_backend_closes_the_backend(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    blocker = tmp_path / "journal-is-a-file"
    blocker.write_text("")
    settings = load_settings(
        {
            "backend": "redis",
            "redis_url": redis_server.url,
            "key_prefix": keys.prefix,
            "engine": "tone",
            "result_dir": tmp_path / "results",
            "journal_dir": blocker / "journal",  # cannot be made: the build fails late
        }
    )
    with pytest.raises(OSError, match="journal-is-a-file"):
        build_runtime(settings, worker_id="host:43")
    wait_for(lambda: not clients_named(redis_client, "host:43"), message="every socket closed")
