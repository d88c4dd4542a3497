"""A whole task lifecycle over real HTTP, against a `gunicorn -w N` instance in Redis mode,
with every exchange kept (status, headers, body) so a test can also search them afterwards.

What `run_lifecycle` proves on its way: tasks accepted beyond the limit all end `done` (so
some waited for a permit and were handed one), several streams of one task, on fresh
connections, each end with its `done` event and one of them on a worker that did not run it,
the status answered by a worker other than the one that ran it, the result, an
Idempotency-Key replay, stats, permits, the page, /readyz and /metrics, and (with a token)
an operator's limit change, undone again.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from taskmon.harness.client import TERMINAL, Answer, call
from taskmon.harness.processes import wait_until
from taskmon.harness.sse_client import SSEStream, read_stream


@dataclass
class Exchange:
    """One request and what came back, as text (a binary body is kept as its repr)."""

    method: str
    path: str
    status: int
    headers: dict[str, str]
    body: str


@dataclass
class Recorder:
    """HTTP calls on fresh connections (any worker may answer), each one recorded."""

    base_url: str
    exchanges: list[Exchange] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def call(
        self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None
    ) -> Answer:
        answer = call(self.base_url, method, path, body, headers=headers, timeout=30)
        shown = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body)
        self._keep(Exchange(method, path, answer.status, answer.headers, str(shown)))
        return answer

    def stream(self, path: str, timeout: float = 60) -> SSEStream:
        stream = read_stream(self.base_url, path, timeout=timeout)
        text = "\n".join([*(m.data for m in stream.messages), *(c for _, c in stream.comments)])
        self._keep(Exchange("GET", path, stream.status, stream.headers, text))
        return stream

    def _keep(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)


@dataclass(frozen=True)
class Lifecycle:
    task_ids: list[str]
    workers: set[str]  # every X-Worker-Id that answered


def wait_done(rec: Recorder, task_ids: list[str], timeout: float = 60) -> dict[str, Any]:
    """Poll until every task is terminal; each must be `done`. Returns the last statuses."""
    deadline = time.monotonic() + timeout
    final: dict[str, Any] = {}
    while len(final) < len(task_ids):
        for task_id in [t for t in task_ids if t not in final]:
            answer = rec.call("GET", f"/api/task/status/{task_id}")
            if answer.status == 200 and answer.body["state"] in TERMINAL:
                final[task_id] = answer.body
        if time.monotonic() > deadline:
            raise TimeoutError(f"not terminal after {timeout} s: {set(task_ids) - set(final)}")
        time.sleep(0.05)
    failed = {t: s for t, s in final.items() if s["state"] != "done"}
    assert not failed, failed
    return final


def run_lifecycle(
    rec: Recorder, *, tasks: int, text: str, admin_token: str | None = None, label: str = "t"
) -> Lifecycle:
    """The lifecycle above; asserts every step. `text` sets each synthesis's length."""
    with ThreadPoolExecutor(max_workers=tasks) as pool:
        accepted = list(
            pool.map(
                lambda n: rec.call("POST", "/api/tts", {"text": f"{label} {n} {text}"}),
                range(tasks),
            )
        )
    assert [a.status for a in accepted] == [202] * tasks, [a.body for a in accepted]
    ids = [a.body["task_id"] for a in accepted]
    first = ids[0]

    with ThreadPoolExecutor(max_workers=4) as pool:
        streams = list(pool.map(lambda _: rec.stream(f"/api/task/stream/{first}"), range(4)))
    final = wait_done(rec, ids)
    ran_on = final[first]["worker"]
    for stream in streams:
        assert stream.status == 200
        assert stream.ended, "the stream ends after the terminal event"
        assert stream.messages[-1].json()["state"] == "done", stream.messages
    stream_workers = {s.headers["X-Worker-Id"] for s in streams}

    others = {a.worker for a in (rec.call("GET", f"/api/task/status/{first}") for _ in range(12))}
    assert (others | stream_workers) - {ran_on}, "no other worker answered for the task"

    result = rec.call("GET", f"/api/task/result/{first}")
    assert result.status == 200
    assert result.headers["Content-Type"] == "audio/wav"

    key = {"Idempotency-Key": f"{label}-replay"}
    made = rec.call("POST", "/api/tts", {"text": f"{label} replay"}, headers=key)
    replayed = rec.call("POST", "/api/tts", {"text": f"{label} replay"}, headers=key)
    assert (made.status, replayed.status) == (202, 200)
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    wait_done(rec, [made.body["task_id"]])

    stats = rec.call("GET", "/api/monitor/stats")
    assert stats.status == 200
    assert (stats.body["backend"], stats.body["degraded"]) == ("redis", False), stats.body
    assert stats.body["counts"]["done"] >= tasks + 1
    for path in ("/api/monitor/permits", "/api/monitor/recent", "/api/monitor/workers",
                 "/readyz", "/metrics", "/monitor", "/healthz", "/openapi.json"):  # fmt: skip
        answer = rec.call("GET", path)
        assert answer.status == 200, (path, answer.body)
    if admin_token is not None:
        auth = {"Authorization": f"Bearer {admin_token}"}
        limit = int(stats.body["concurrency"]["limit"])
        changed = rec.call("PUT", "/api/admin/concurrency", {"limit": limit + 1}, headers=auth)
        assert changed.status == 200, changed.body
        assert changed.body == {**changed.body, "limit": limit + 1, "scope": "global"}
        back = rec.call("PUT", "/api/admin/concurrency", {"limit": limit}, headers=auth)
        assert back.status == 200
        for path in ("/api/admin/permits", "/api/admin/workers"):
            answer = rec.call("GET", path, headers=auth)
            assert answer.status == 200, (path, answer.body)
        # A drain ordered and cancelled, and a release of a token no one holds.
        target = rec.call("GET", "/api/monitor/workers").body["workers"][0]["worker"]
        for method in ("POST", "DELETE"):
            order = rec.call(method, f"/api/admin/workers/{target}/drain", headers=auth)
            assert order.status == 202, (method, order.body)
        cancelled = time.monotonic()

        # The target may have obeyed the order at a heartbeat between the two calls; it
        # obeys the cancel at its next one (a third of the lease TTL) and refuses new tasks
        # until then. Its state as published after the cancel says when it admits again.
        def admits_again() -> bool:
            asked = time.monotonic()
            listed = rec.call("GET", "/api/monitor/workers").body["workers"]
            (entry,) = [w for w in listed if w["worker"] == target]
            # An age read at some instant of the call: published after the cancel only if
            # younger than the cancel was when the call began.
            return not entry["draining"] and entry["last_seen_s"] < asked - cancelled

        wait_until(admits_again, timeout=15, what=f"{target} admitting after the cancelled drain")
        unheld = rec.call("DELETE", "/api/admin/permits/not-a-held-token", headers=auth)
        assert unheld.status == 404, unheld.body
    workers = {e.headers.get("X-Worker-Id", "") for e in rec.exchanges} - {""}
    return Lifecycle([*ids, made.body["task_id"]], workers)
