"""How the harness picks its Redis: its order, the override, and the Docker probe.

The probe is run against real sockets: a port nobody listens on, a missing unix socket, and a
small HTTP server that answers the two requests a Docker daemon's `ping` needs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from taskmon.harness.processes import free_port
from taskmon.harness.redis_container import docker_answers
from taskmon.harness.redis_server import choose_source, find_redis_server


class DaemonLike(BaseHTTPRequestHandler):
    """Answers GET /version and GET /v*/_ping as the Docker Engine API does."""

    def do_GET(self) -> None:
        if self.path == "/version":
            body = json.dumps({"ApiVersion": "1.43", "Version": "24.0.0"}).encode()
            kind = "application/json"
        elif self.path.endswith("/_ping"):
            body, kind = b"OK", "text/plain"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test output is for the tests."""


@pytest.fixture
def daemon_like() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), DaemonLike)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_daemon_that_answers_ping_is_found(
    daemon_like: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", daemon_like)
    assert docker_answers() is True


@pytest.mark.parametrize("where", ["closed-port", "missing-socket"])
def test_no_daemon_is_a_quick_false(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    host = (
        f"tcp://127.0.0.1:{free_port()}"
        if where == "closed-port"
        else "unix:///nonexistent/docker.sock"
    )
    monkeypatch.setenv("DOCKER_HOST", host)
    started = time.monotonic()
    assert docker_answers(timeout_s=1) is False
    # Not a speed target: a probe that waited for its timeout would mean a refused
    # connection is not recognised as one.
    assert time.monotonic() - started < 1.0


def test_auto_without_a_daemon_uses_the_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    if find_redis_server() is None:
        pytest.skip("no redis-server binary on this machine")
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{free_port()}")
    assert choose_source("auto") == "binary"


def test_auto_prefers_a_container_when_a_daemon_answers(
    daemon_like: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", daemon_like)
    assert choose_source("auto") == "container"
    if find_redis_server() is not None:
        assert choose_source("binary") == "binary", "the override skips the daemon"


def test_asking_for_a_container_without_a_daemon_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{free_port()}")
    with pytest.raises(RuntimeError, match="no Docker daemon answers"):
        choose_source("container")


def test_an_unknown_source_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKMON_TEST_REDIS_SOURCE", "podman")
    with pytest.raises(RuntimeError, match="TASKMON_TEST_REDIS_SOURCE must be one of"):
        choose_source()
