"""redis-server in a Docker container (testcontainers), for machines whose daemon answers.

The second source of a test Redis, after TASKMON_TEST_REDIS_URL and before a local binary.
The container publishes Redis on the host port `RedisServer` chose, so a restart keeps the
URL, as the binary's does; that port was checked free on this machine, so with a remote
DOCKER_HOST a clash shows as a start-up error (set TASKMON_TEST_REDIS_SOURCE=binary there).
The faults map onto the daemon:

- stop: the container is removed, and its data with it (a restart without persistence);
- stop after SHUTDOWN SAVE: the exited container is kept, and starting it again reloads the
  snapshot from its own file system (a persistent primary that restarted);
- pause/resume: `docker pause` freezes the cgroup (the port stays open, nothing answers).

Our CI machines have no Docker daemon, so this path runs only where one answers; the selection
itself (`docker_answers`) is what our tests cover. Ryuk, testcontainers' reaper, removes the
container if this process dies before `stop()`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.parse
from typing import Any

DEFAULT_IMAGE = "redis:7-alpine"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


def docker_answers(timeout_s: float = 2.0) -> bool:
    """True when a Docker daemon answers `ping` within `timeout_s`.

    Never raises: no SDK installed, no socket, a refused or slow daemon all mean False.
    """
    try:
        import docker  # type: ignore[import-untyped]  # noqa: PLC0415
    except ImportError:
        return False
    if not _something_listens(os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST, timeout_s):
        return False
    try:
        client = docker.from_env(timeout=max(1, round(timeout_s)))
    except Exception:  # DockerException, or a malformed DOCKER_HOST
        return False
    try:
        return bool(client.ping())
    except Exception:  # requests' connection errors and the SDK's own
        return False
    finally:
        client.close()


def _something_listens(docker_host: str, timeout_s: float) -> bool:
    """A plain connect to DOCKER_HOST's socket, closed at once.

    The SDK leaks the socket of a failed unix connect (it never closes it), so the common
    "no daemon here" answer comes from this check instead. Schemes it does not know (ssh://)
    are left to the SDK.
    """
    parsed = urllib.parse.urlsplit(docker_host)
    try:
        if parsed.scheme in {"unix", "http+unix"}:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout_s)
                sock.connect(parsed.path)
        elif parsed.scheme in {"tcp", "http", "https"} and parsed.hostname:
            port = parsed.port or (2376 if os.environ.get("DOCKER_TLS_VERIFY") else 2375)
            socket.create_connection((parsed.hostname, port), timeout=timeout_s).close()
    except (OSError, ValueError):
        return False
    return True


class ContainerRunner:
    """One Redis container at a time, published on `host_port`; see the module docstring."""

    def __init__(self, *, host_port: int, args: list[str], image: str | None = None) -> None:
        self.host_port = host_port
        self.args = args
        self.image = image or os.environ.get("TASKMON_TEST_REDIS_IMAGE") or DEFAULT_IMAGE
        self._container: Any = None  # testcontainers' DockerContainer, once launched
        self._kept = False  # exited after SHUTDOWN SAVE, to be started again with its data

    @property
    def host(self) -> str:
        if self._container is None:
            return "127.0.0.1"
        return str(self._container.get_container_host_ip())

    def launch(self) -> None:
        if self._container is not None and self._kept:
            self._kept = False
            self._container.get_wrapped_container().start()
            return
        from testcontainers.core.container import DockerContainer  # noqa: PLC0415

        container = DockerContainer(self.image)
        # Published on the Docker host's interfaces, since testcontainers may reach it at a
        # gateway or remote address rather than this machine's loopback; RedisServer always
        # gives a container a password for that reason.
        container.with_bind_ports(6379, self.host_port)
        bind_all = "0.0.0.0"  # noqa: S104  # the container's own interfaces
        container.with_command(["redis-server", "--bind", bind_all, "--dir", "/data", *self.args])
        self._container = container.start()

    def alive(self) -> bool:
        if self._container is None:
            return False
        wrapped = self._container.get_wrapped_container()
        wrapped.reload()
        return str(wrapped.status) in {"running", "paused"}

    def log_tail(self, lines: int = 40) -> str:
        if self._container is None:
            return ""
        stdout, stderr = self._container.get_logs()
        text = (stdout + stderr).decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def pause(self) -> None:
        self._container.get_wrapped_container().pause()

    def resume(self) -> None:
        self._container.get_wrapped_container().unpause()

    def terminate(self, *, keep_data: bool = False) -> None:
        """Remove the container, or with `keep_data` keep the exited one for `launch()`."""
        if self._container is None:
            return
        if keep_data:
            self._kept = True
            return
        wrapped = self._container.get_wrapped_container()
        with contextlib.suppress(Exception):
            wrapped.reload()
            if wrapped.status == "paused":  # a paused container refuses to be removed
                wrapped.unpause()
        self._container.stop()
        self._container, self._kept = None, False
