"""Real `gunicorn -w 4` stacks for the end-to-end tests, started once per module."""

from __future__ import annotations

import http.client
import json
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskmon.harness.stack import GunicornInstance

MEMORY_ENV = {
    "TASKMON_BACKEND": "memory",
    "TASKMON_ENGINE": "tone",
    "TASKMON_TONE_MS_PER_CHAR": "5",
    "TASKMON_SSE_KEEPALIVE_S": "1",
    "TASKMON_CONCURRENCY_LIMIT": "2",
}


@pytest.fixture(scope="module")
def memory_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornInstance]:
    with GunicornInstance(
        workers=4, env=MEMORY_ENV, workdir=tmp_path_factory.mktemp("memory-stack")
    ) as stack:
        yield stack


class PinnedClient:
    """One kept-alive connection, hence one gunicorn worker: what a browser tab does.

    Memory mode keeps a task in the worker that accepted it, so the happy-path tests talk to
    one worker on purpose and assert, through X-Worker-Id, that they did.
    """

    def __init__(self, base_url: str) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)
        self.workers_seen: set[str] = set()

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        payload = None if body is None else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        self.connection.request(method, path, body=payload, headers=all_headers)
        response = self.connection.getresponse()
        data = response.read()
        response_headers = dict(response.getheaders())
        self.workers_seen.add(response_headers["X-Worker-Id"])
        return response.status, response_headers, data

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        status, _, data = self.request(method, path, body, **kw)
        return status, json.loads(data)

    def wait_terminal(self, task_id: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.json("GET", f"/api/task/status/{task_id}")
            assert status == 200, body
            if body["state"] in ("done", "failed"):
                return body  # type: ignore[no-any-return]
            assert time.monotonic() < deadline, f"task {task_id} still {body['state']}"
            time.sleep(0.02)

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def pinned(memory_stack: GunicornInstance) -> Iterator[PinnedClient]:
    client = PinnedClient(memory_stack.base_url)
    try:
        yield client
    finally:
        client.close()


def wav_duration_s(data: bytes, tmp_path: Path) -> float:
    path = tmp_path / "out.wav"
    path.write_bytes(data)
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()
