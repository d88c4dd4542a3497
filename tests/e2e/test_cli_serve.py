"""`taskmon serve --workers N --bind HOST:PORT`, the way an operator starts the service."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from taskmon.harness.processes import ManagedProcess, children_of, free_port, wait_until
from taskmon.harness.stack import http_get

pytestmark = pytest.mark.e2e


def _taskmon() -> list[str]:
    script = shutil.which("taskmon", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "taskmon.cli"]


def test_serve_runs_gunicorn_with_the_requested_workers(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "TASKMON_ENGINE": "tone", "TASKMON_RESULT_DIR": str(tmp_path / "r"),
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}  # fmt: skip
    server = ManagedProcess(
        [*_taskmon(), "serve", "--workers", "2", "--bind", f"127.0.0.1:{port}"],
        env=env,
        log_path=tmp_path / "serve.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert server.alive(), server.log_tail()
            try:
                return http_get(base, "/readyz")[0] == 200
            except OSError:
                return False

        wait_until(ready, timeout=60, what="taskmon serve ready")
        stats = json.loads(http_get(base, "/api/monitor/stats")[2])
        assert stats["backend"] == "memory"
        assert http_get(base, "/monitor")[0] == 200
        # The exec'd master is the process we started: SIGTERM reaches gunicorn directly.
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
        assert "Booting worker" in server.log_tail(200)
    finally:
        server.stop()


def test_serve_refuses_a_bad_setting_naming_the_variable(tmp_path: Path) -> None:
    env = {**os.environ, "TASKMON_CONCURRENCY_LIMIT": "zero"}
    result = subprocess.run(
        [*_taskmon(), "serve", "--bind", f"127.0.0.1:{free_port()}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "TASKMON_CONCURRENCY_LIMIT" in result.stderr


def test_serve_with_a_settings_file_survives_sighup_and_a_usr2_upgrade(tmp_path: Path) -> None:
    """SIGHUP applies the file; a USR2 re-exec starts the new master from the environment the
    old one started with (a key dropped from the file falls back), with metrics of its own."""
    port = free_port()
    env_file = tmp_path / "taskmon.env"
    env_file.write_text("TASKMON_CONCURRENCY_LIMIT=3\n", encoding="utf-8")
    env = {**os.environ, "TASKMON_ENGINE": "tone", "TASKMON_RESULT_DIR": str(tmp_path / "r"),
           "TASKMON_ENV_FILE": str(env_file), "TASKMON_BACKEND": "memory"}  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the master makes (and removes) its own
    server = ManagedProcess(
        [*_taskmon(), "serve", "--workers", "1", "--bind", f"127.0.0.1:{port}"],
        env=env,
        log_path=tmp_path / "serve.log",
    )
    base = f"http://127.0.0.1:{port}"

    def limit_is(expected: int) -> bool:
        try:
            status, _, body = http_get(base, "/api/monitor/stats")
        except OSError:
            return False
        return status == 200 and json.loads(body)["concurrency"]["limit"] == expected

    try:
        wait_until(lambda: limit_is(3), timeout=60, what="the file's limit")
        server.process.send_signal(signal.SIGHUP)  # a reload: gunicorn's env_orig now holds 3
        wait_until(lambda: "applied; changed: nothing" in server.log_tail(50), timeout=30,
                   what="the reload")  # fmt: skip
        old_master = server.pid
        old_workers = set(children_of(old_master))
        server.process.send_signal(signal.SIGUSR2)

        def new_master() -> int | None:
            for pid in set(children_of(old_master)) - old_workers:
                if children_of(pid):  # a master with a worker of its own
                    return pid
            return None

        wait_until(lambda: new_master() is not None, timeout=60, what="the new master")
        master = new_master()
        assert master is not None
        server.process.send_signal(signal.SIGTERM)  # the old master goes, the new one stays
        server.process.wait(40)
        wait_until(lambda: limit_is(3), timeout=30, what="the new master serving")
        assert http_get(base, "/metrics")[0] == 200, "the new master lost its metrics directory"

        env_file.write_text("", encoding="utf-8")  # dropped: back to the default of 4
        os.kill(master, signal.SIGHUP)
        wait_until(lambda: limit_is(4), timeout=60, what="the dropped key falling back")
        assert http_get(base, "/metrics")[0] == 200
    finally:
        server.stop()  # the new master is in the same process group


def _refused(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_serve_refuses_settings_that_contradict_each_other(tmp_path: Path) -> None:
    """Each value valid, the pair not: refused before gunicorn starts, naming both."""
    env = {**os.environ, "TASKMON_TASK_TTL_S": "60", "TASKMON_RESULT_DIR": str(tmp_path)}
    result = _refused([*_taskmon(), "serve", "--bind", f"127.0.0.1:{free_port()}"], env)
    assert result.returncode == 2
    assert "TASKMON_TASK_TTL_S=60 is shorter than TASKMON_PERMIT_TIMEOUT_S=300" in result.stderr
    assert "Booting worker" not in result.stderr


def test_serve_refuses_a_contradiction_between_the_environment_and_the_settings_file(
    tmp_path: Path,
) -> None:
    env_file = tmp_path / "taskmon.env"
    env_file.write_text("TASKMON_LEASE_TTL_MS=500\n", encoding="utf-8")
    env = {**os.environ, "TASKMON_ENV_FILE": str(env_file), "TASKMON_BACKEND": "redis",
           "TASKMON_REDIS_URL": "redis://127.0.0.1:1/0"}  # fmt: skip
    result = _refused([*_taskmon(), "serve", "--bind", f"127.0.0.1:{free_port()}"], env)
    assert "TASKMON_LEASE_TTL_MS=500 is too short for TASKMON_REDIS_RETRIES=1" in result.stderr


def test_gunicorn_started_directly_refuses_them_in_the_master(tmp_path: Path) -> None:
    """Without the CLI, gunicorn's config module validates the settings in the master."""
    gunicorn = Path(sys.executable).with_name("gunicorn")
    env = {**os.environ, "TASKMON_REDIS_URL": "redis://127.0.0.1:1/0",
           "TASKMON_LEASE_TTL_MS": "60000", "TASKMON_TASK_TTL_S": "100",
           "TASKMON_PERMIT_TIMEOUT_S": "10", "TASKMON_ENGINE_TIMEOUT_S": "10",
           "TASKMON_BIND": f"127.0.0.1:{free_port()}",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}  # fmt: skip
    result = _refused(
        [str(gunicorn), "--config", "python:taskmon.gunicorn_conf", "taskmon.wsgi:app"], env
    )
    assert "taskmon: invalid configuration: TASKMON_TASK_TTL_S=100 is shorter than twice " \
        "TASKMON_LEASE_TTL_MS=60000" in result.stderr  # fmt: skip
    assert "Booting worker" not in result.stderr
