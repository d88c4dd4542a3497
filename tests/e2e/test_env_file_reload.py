"""A live host changes backend by SIGHUP with TASKMON_ENV_FILE: every new worker has the new
settings, and a file with invalid settings is refused while the host keeps serving."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from taskmon.harness.client import call
from taskmon.harness.processes import wait_until
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.stack import GunicornInstance

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


def backends_seen(host: GunicornInstance, reads: int = 24) -> dict[str, str]:
    """worker id -> backend, from /api/monitor/stats over fresh connections."""
    seen: dict[str, str] = {}
    for _ in range(reads):
        body = call(host.base_url, "GET", "/api/monitor/stats").body
        seen[body["worker"]] = body["backend"]
    return seen


def reload_until(host: GunicornInstance, backend: str) -> set[int]:
    """SIGHUP, then wait until only new workers remain and every one answers `backend`."""
    assert host.process is not None
    old = set(host.worker_pids())
    host.process.process.send_signal(signal.SIGHUP)

    def replaced() -> bool:
        pids = set(host.worker_pids())
        return len(pids) == host.workers and not pids & old

    wait_until(replaced, timeout=45, what="the old workers replaced")
    wait_until(
        lambda: set(backends_seen(host, 8).values()) == {backend},
        timeout=30,
        what=f"every worker on {backend}",
    )
    return set(host.worker_pids())


def test_sighup_moves_a_host_between_memory_and_redis(tmp_path: Path) -> None:
    env_file = tmp_path / "taskmon.env"
    env_file.write_text("TASKMON_BACKEND=memory\n", encoding="utf-8")
    with RedisServer(workdir=tmp_path / "redis") as redis_server:
        env = {
            "TASKMON_ENV_FILE": str(env_file),
            "TASKMON_REDIS_URL": redis_server.url,
            "TASKMON_ENGINE": "tone",
            "TASKMON_BACKEND": "redis",  # the master's own value: the file overrides it
        }
        with GunicornInstance(workers=2, env=env, workdir=tmp_path / "host") as host:
            assert set(backends_seen(host).values()) == {"memory"}

            env_file.write_text("TASKMON_BACKEND=redis\n", encoding="utf-8")
            redis_workers = reload_until(host, "redis")
            accepted = call(host.base_url, "POST", "/api/tts", {"text": "after the switch"})
            assert accepted.status == 202
            # In Redis mode the task is every worker's: read it until each worker has answered.
            answered: dict[str, int] = {}
            wait_until(
                lambda: (
                    answered.update(
                        {
                            (
                                a := call(
                                    host.base_url,
                                    "GET",
                                    f"/api/task/status/{accepted.body['task_id']}",
                                )
                            ).worker: a.status
                        }
                    )
                    or len(answered) == 2
                ),
                timeout=20,
                what="a read on each worker",
            )
            assert set(answered.values()) == {200}

            # Invalid: memory-only settings are fine, but a limit of 0 is refused by Settings.
            env_file.write_text("TASKMON_BACKEND=memory\nTASKMON_CONCURRENCY_LIMIT=0\n", "utf-8")
            assert host.process is not None
            host.process.process.send_signal(signal.SIGHUP)
            wait_until(
                lambda: "TASKMON_CONCURRENCY_LIMIT='0'" in host.log_tail(80),
                timeout=30,
                what="the refusal logged",
            )
            assert "keep the settings the old ones had" in host.log_tail(80)
            wait_until(
                lambda: (
                    not set(host.worker_pids()) & redis_workers and len(host.worker_pids()) == 2
                ),
                timeout=45,
                what="the reload done",
            )
            assert set(backends_seen(host).values()) == {"redis"}  # the previous settings

            env_file.write_text("TASKMON_BACKEND=memory\n", encoding="utf-8")
            reload_until(host, "memory")
