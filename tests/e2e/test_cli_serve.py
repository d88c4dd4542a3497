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

from taskmon.harness.processes import ManagedProcess, free_port, wait_until
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
