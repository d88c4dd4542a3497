"""Plain HTTP helpers for the checkers: each call on a fresh connection (any worker may answer)."""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

TERMINAL = ("done", "failed")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def worker(self) -> str:
        return self.headers.get("X-Worker-Id", "?")


def connect(base_url: str, timeout: float) -> http.client.HTTPConnection:
    """A new connection to `http://host:port` (not yet opened)."""
    host, port = base_url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def call(
    base_url: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Answer:
    conn = connect(base_url, timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        all_headers = {"Connection": "close", "Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=payload, headers=all_headers)
        response = conn.getresponse()
        raw = response.read()
        content_type = response.getheader("Content-Type", "")
        decoded: Any = json.loads(raw) if "json" in content_type and raw else raw
        return Answer(response.status, dict(response.getheaders()), decoded)
    finally:
        conn.close()


def submit_many(
    base_urls: list[str],
    texts: list[str],
    *,
    parallel: int = 8,
    headers: dict[str, str] | None = None,
) -> list[Answer]:
    """POST each text to /api/tts, spread round-robin over `base_urls`, `parallel` at once."""

    def submit(index: int) -> Answer:
        base = base_urls[index % len(base_urls)]
        return call(base, "POST", "/api/tts", {"text": texts[index]}, headers=headers)

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(submit, range(len(texts))))


def wait_terminal(
    base_urls: list[str], task_ids: list[str], *, timeout: float = 60.0
) -> dict[str, dict[str, Any]]:
    """Poll (fresh connections, rotating over `base_urls`) until every task is done or failed.

    Raises TimeoutError naming the tasks still live. A 404 counts as not yet terminal.
    """
    deadline = time.monotonic() + timeout
    final: dict[str, dict[str, Any]] = {}
    turn = 0
    while True:
        for task_id in [t for t in task_ids if t not in final]:
            answer = call(base_urls[turn % len(base_urls)], "GET", f"/api/task/status/{task_id}")
            turn += 1
            if answer.status == 200 and answer.body["state"] in TERMINAL:
                final[task_id] = answer.body
        if len(final) == len(task_ids):
            return final
        if time.monotonic() > deadline:
            live = sorted(set(task_ids) - set(final))
            raise TimeoutError(f"{len(live)} task(s) not terminal after {timeout} s: {live[:5]}")
        time.sleep(0.05)
