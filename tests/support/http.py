"""HTTP helpers of the end-to-end tests: a client pinned to one worker, WAV checks."""

from __future__ import annotations

import http.client
import json
import time
import wave
from pathlib import Path
from typing import Any


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


def wav_duration_s(data: bytes, tmp_path: Path) -> float:
    path = tmp_path / "out.wav"
    path.write_bytes(data)
    with wave.open(str(path)) as wav:
        return float(wav.getnframes() / wav.getframerate())
