"""The composition root without Flask: which adapters a worker gets, and how it stops.

The Redis wiring is tested against a real redis-server in tests/integration/test_runtime.py;
these need no service (an unreachable Redis is a free port nobody listens on).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskmon.config import ConfigError, Settings, load_settings
from taskmon.domain import TaskState
from taskmon.harness.processes import free_port
from taskmon.memory import InMemorySemaphore, InMemoryTaskMonitor
from taskmon.ports import BackendUnavailable
from taskmon.runtime import Runtime, build_runtime, worker_identity
from taskmon.service import ServiceClosed
from tests.support.timing import wait_for

pytestmark = pytest.mark.usefixtures("clean_taskmon_env")

MakeSettings = Callable[..., Settings]


@pytest.fixture
def settings(tmp_path: Path) -> MakeSettings:
    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "engine": "tone",
            "tone_ms_per_char": 0,
            "result_dir": tmp_path / "results",
            "backend": "memory",
        }
        return load_settings(base | overrides)

    return make


@pytest.fixture
def runtimes() -> Iterator[list[Runtime]]:
    made: list[Runtime] = []
    yield made
    for rt in made:
        rt.close(wait=True)


def unreachable_url(password: str = "") -> str:
    auth = f":{password}@" if password else ""
    return f"redis://{auth}127.0.0.1:{free_port()}/0"


def test_the_runtime_module_does_not_import_flask() -> None:
    # The wiring must be usable by any front (a CLI, a worker without HTTP, the tests).
    code = (
        "import sys, taskmon.runtime; sys.exit('flask' in sys.modules or 'werkzeug' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_memory_wiring_runs_a_task_to_done_without_flask(
    settings: MakeSettings, runtimes: list[Runtime]
) -> None:
    rt = build_runtime(settings(concurrency_limit=3), worker_id="host:7")
    runtimes.append(rt)
    assert isinstance(rt.monitor, InMemoryTaskMonitor)
    assert isinstance(rt.semaphore, InMemorySemaphore)
    assert rt.semaphore.limit() == 3
    assert (rt.service.monitor, rt.service.semaphore) == (rt.monitor, rt.semaphore)
    assert (rt.worker_id, rt.backend_target, rt.degraded) == ("host:7", "in-process", False)
    assert rt.results.directory.is_dir(), "the result directory is made at start"
    task = rt.service.submit({"text": "wired"}).task
    assert task.worker == "host:7"
    wait_for(lambda: (t := rt.monitor.get(task.task_id)) is not None and t.state.terminal)
    done = rt.monitor.get(task.task_id)
    assert done is not None
    assert done.state is TaskState.DONE
    assert rt.results.path_for(task.task_id).is_file()


def test_the_worker_id_is_host_and_pid_by_default(
    settings: MakeSettings, runtimes: list[Runtime]
) -> None:
    rt = build_runtime(settings())
    runtimes.append(rt)
    assert rt.worker_id == worker_identity()
    assert rt.worker_id.endswith(f":{os.getpid()}")


def test_auto_without_a_url_is_memory_with_one_warning(
    settings: MakeSettings, runtimes: list[Runtime], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="taskmon"):
        rt = build_runtime(settings(backend="auto"))
    runtimes.append(rt)
    assert rt.monitor.backend == "memory"
    assert not rt.degraded, "memory is what this configuration asks for"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "TASKMON_REDIS_URL is not set" in warnings[0].getMessage()


def test_auto_with_an_unreachable_redis_is_memory_with_a_warning_that_hides_the_password(
    settings: MakeSettings, runtimes: list[Runtime], caplog: pytest.LogCaptureFixture
) -> None:
    url = unreachable_url(password="s3cret-pw")
    with caplog.at_level(logging.WARNING, logger="taskmon"):
        rt = build_runtime(settings(backend="auto", redis_url=url))
    runtimes.append(rt)
    assert (rt.monitor.backend, rt.backend_target) == ("memory", "in-process")
    assert rt.degraded, "configured for Redis, running on memory"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "does not answer" in warnings[0]
    assert ":***@127.0.0.1" in warnings[0]
    assert "s3cret-pw" not in caplog.text


def test_redis_mode_with_an_unreachable_redis_refuses_to_build(settings: MakeSettings) -> None:
    url = unreachable_url(password="s3cret-pw")
    with pytest.raises(BackendUnavailable, match="TASKMON_BACKEND=auto") as refused:
        build_runtime(settings(backend="redis", redis_url=url))
    assert ":***@127.0.0.1" in str(refused.value)
    assert "s3cret-pw" not in str(refused.value)


def test_an_engine_that_is_not_installed_stops_the_build(
    settings: MakeSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng on this PATH
    with pytest.raises(ConfigError, match="espeak-ng is not on PATH"):
        build_runtime(settings(engine="espeak"))


def test_a_result_directory_that_cannot_be_made_stops_the_build(
    settings: MakeSettings, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="a-file"):
        build_runtime(settings(result_dir=blocker / "results"))


def test_close_is_idempotent_and_runs_each_closer_once_even_when_one_fails(
    settings: MakeSettings, caplog: pytest.LogCaptureFixture
) -> None:
    rt = build_runtime(settings())
    calls: list[str] = []

    def failing() -> None:
        calls.append("failing")
        raise RuntimeError("boom")

    rt.closers[:0] = [failing, lambda: calls.append("next")]
    with caplog.at_level(logging.ERROR, logger="taskmon"):
        rt.close()
        rt.close()
    assert calls == ["failing", "next"], "a failing closer does not stop the others"
    assert "closing" in caplog.text


def test_closing_with_wait_returns_only_after_the_running_synthesis_ended(
    settings: MakeSettings,
) -> None:
    """What atexit uses outside gunicorn: the interpreter has joined its threads by then, so
    the wait for running syntheses must happen in the closing call itself."""
    rt = build_runtime(settings(tone_ms_per_char=20))
    task = rt.service.submit({"text": "x" * 40}).task  # about 0.8 s
    wait_for(lambda: (t := rt.monitor.get(task.task_id)) and t.state is TaskState.RUNNING)
    rt.close(wait=True)
    assert rt.service.pending() == 0
    stored = rt.monitor.get(task.task_id)
    assert stored is not None
    assert stored.state is TaskState.DONE


def test_a_closed_runtime_accepts_no_task(settings: MakeSettings) -> None:
    rt = build_runtime(settings())
    rt.close(wait=True)
    with pytest.raises(ServiceClosed):
        rt.service.submit({"text": "too late"})
