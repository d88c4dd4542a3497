"""Real taskmon instances: `gunicorn -w N` on a free port, ready when every worker answers.

One GunicornInstance simulates one host; start several sharing a Redis to simulate several.
Always use them as context managers (or call stop() in finally): they kill their process group.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from taskmon.harness.client import connect
from taskmon.harness.processes import ManagedProcess, children_of, free_port, wait_until


def http_get(
    base_url: str, path: str, *, timeout: float = 5.0, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One GET over a fresh connection (so gunicorn may hand it to any worker), raw body."""
    conn = connect(base_url, timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


class GunicornInstance:
    """`gunicorn -c python:taskmon.gunicorn_conf -w N taskmon.wsgi:app` with TASKMON_ env."""

    def __init__(
        self,
        *,
        workers: int = 4,
        env: dict[str, str] | None = None,
        workdir: Path | None = None,
        threads: int = 16,
        host: str = "127.0.0.1",
    ) -> None:
        self.workers = workers
        self.host = host
        self.port = free_port(host)
        self.base_url = f"http://{host}:{self.port}"
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="taskmon-stack-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "TASKMON_RESULT_DIR": str(self.workdir / "results"),
            "PROMETHEUS_MULTIPROC_DIR": str(self._fresh_dir("metrics")),
            **(env or {}),
        }
        # `--threads` below wins over TASKMON_THREADS in gunicorn; the workers derive their
        # stream limit from the variable, so it must say the same unless the caller set it.
        if env and "TASKMON_THREADS" in env:
            threads = int(env["TASKMON_THREADS"])
        self.env["TASKMON_THREADS"] = str(threads)
        self.threads = threads
        self.process: ManagedProcess | None = None

    def _fresh_dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start(self, ready_timeout: float = 60.0) -> GunicornInstance:
        argv = [
            sys.executable, "-m", "gunicorn",
            "--config", "python:taskmon.gunicorn_conf",
            "--workers", str(self.workers),
            "--threads", str(self.threads),
            "--bind", f"{self.host}:{self.port}",
            "taskmon.wsgi:app",
        ]  # fmt: skip
        self.process = ManagedProcess(
            argv, env=self.env, log_path=self.workdir / f"gunicorn-{self.port}.log"
        )
        try:
            self.wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        """Ready when /readyz answers 200 from every worker; if fresh connections keep landing
        on the same few workers until `timeout`, one ready worker is enough (tests that need
        several check X-Worker-Id themselves)."""
        seen: set[str] = set()
        process = self.process
        if process is None:
            raise RuntimeError("start() the instance before waiting for it")

        def all_workers_ready() -> bool:
            if not process.alive():
                raise RuntimeError(
                    f"gunicorn exited with {process.process.returncode}:\n" + process.log_tail()
                )
            try:
                status, headers, _ = http_get(self.base_url, "/readyz", timeout=2)
            except OSError:
                return False
            if status == 200:
                seen.add(headers.get("X-Worker-Id", ""))
            return len(seen) >= self.workers

        try:
            wait_until(all_workers_ready, timeout=timeout, interval=0.02, what="all workers ready")
        except TimeoutError:
            # Fresh connections may keep landing on the same few workers; one is enough to
            # serve, and the tests that need several workers check X-Worker-Id themselves.
            if not seen:
                raise

    def worker_pids(self) -> list[int]:
        """The pids of the master's live workers."""
        if self.process is None or not self.process.alive():
            return []
        return children_of(self.process.pid)

    def signal_worker(self, pid: int, signum: int = signal.SIGKILL) -> None:
        """Kill (SIGKILL), pause (SIGSTOP) or resume (SIGCONT) one worker of this instance.

        Raises ValueError for a pid that is not one of its workers: a test must never signal
        a stranger.
        """
        if pid not in self.worker_pids():
            raise ValueError(f"pid {pid} is not a worker of the instance on port {self.port}")
        os.kill(pid, signum)

    def stats(self) -> dict[str, Any]:
        _, _, body = http_get(self.base_url, "/api/monitor/stats")
        return json.loads(body)  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process else ""

    def __enter__(self) -> GunicornInstance:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
