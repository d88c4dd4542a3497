"""SSE as browsers use it, against a real gunicorn worker over real sockets: the per-worker
stream limit (503 + Retry-After, a slot freed when a client leaves), the idle end, 204 once
the client saw the end, `retry:` first.

One worker per instance, so every connection meets the same stream count.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest

from taskmon.harness.client import call
from taskmon.harness.sse_client import read_stream
from taskmon.harness.stack import GunicornInstance

pytestmark = pytest.mark.e2e

MAX_STREAMS = 2
THREADS = 6
# 400 characters at 20 ms each: 8 s of synthesis, without a state event between running and done.
LONG_TEXT = "s" * 400


def stack_env(**extra: str) -> dict[str, str]:
    return {
        "TASKMON_BACKEND": "memory",
        "TASKMON_ENGINE": "tone",
        "TASKMON_TONE_MS_PER_CHAR": "20",
        "TASKMON_CONCURRENCY_LIMIT": "1",
        "TASKMON_SSE_KEEPALIVE_S": "0.5",
        "TASKMON_THREADS": str(THREADS),
        **extra,
    }


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornInstance]:
    env = stack_env(TASKMON_SSE_MAX_STREAMS=str(MAX_STREAMS), TASKMON_SSE_IDLE_TIMEOUT_S="60")
    with GunicornInstance(
        workers=1, threads=THREADS, env=env, workdir=tmp_path_factory.mktemp("limited")
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornInstance]:
    env = stack_env(TASKMON_SSE_IDLE_TIMEOUT_S="1.5")
    with GunicornInstance(
        workers=1, threads=THREADS, env=env, workdir=tmp_path_factory.mktemp("idle")
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def four_threads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornInstance]:
    env = {**stack_env(), "TASKMON_THREADS": "4"}  # no TASKMON_SSE_MAX_STREAMS: the default
    with GunicornInstance(
        workers=1, threads=4, env=env, workdir=tmp_path_factory.mktemp("four-threads")
    ) as stack:
        yield stack


class RawStream:
    """An SSE request on a raw socket (HTTP/1.0: the body is the event stream as sent)."""

    def __init__(
        self,
        base_url: str,
        path: str,
        headers: dict[str, str] | None = None,
        method: str = "GET",
    ) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        request = (
            f"{method} {path} HTTP/1.0\r\nHost: {host}\r\nAccept: text/event-stream\r\n{extra}\r\n"
        )
        self.sock.sendall(request.encode())
        self.file = self.sock.makefile("rb")
        self.status = int(self.file.readline().split()[1])
        self.headers: dict[str, str] = {}
        while (line := self.file.readline().decode("latin-1").strip()) != "":
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def block(self) -> str:
        """The next SSE block (up to its blank line); "" once the server closed the stream."""
        lines = []
        while (line := self.file.readline().decode()) not in ("\n", ""):
            lines.append(line)
        return "".join(lines)

    def body(self) -> bytes:
        return self.file.read()

    def abort(self) -> None:
        """Leave as a closed tab does, at once: a reset, not a polite FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.file.close()
        self.sock.close()


def submit(base_url: str, text: str) -> str:
    answer = call(base_url, "POST", "/api/tts", {"text": text})
    assert answer.status == 202, answer.body
    return str(answer.body["task_id"])


def wait_terminal(base_url: str, task_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = call(base_url, "GET", f"/api/task/status/{task_id}").body
        if body["state"] in ("done", "failed"):
            return body  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def test_past_the_limit_a_stream_is_503_and_a_closed_one_frees_its_slot(
    limited: GunicornInstance,
) -> None:
    task_id = submit(limited.base_url, LONG_TEXT)
    path = f"/api/task/stream/{task_id}"
    opened = [RawStream(limited.base_url, path) for _ in range(MAX_STREAMS)]
    try:
        for stream in opened:
            assert stream.status == 200
            assert re.fullmatch(r"retry: \d+\n", stream.block())  # the slot is held now
        refused = RawStream(limited.base_url, path)
        assert refused.status == 503
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["retry-after"] == "5"
        problem = json.loads(refused.body())
        refused.abort()
        assert problem["type"] == "urn:taskmon:problem:too-many-streams"
        assert problem["status"] == 503
        # The API still answers while every stream slot is held.
        assert call(limited.base_url, "GET", f"/api/task/status/{task_id}").status == 200
        opened.pop().abort()
        # The server learns of the reset at its next write (a keepalive, 0.5 s).
        deadline = time.monotonic() + 10
        while (again := RawStream(limited.base_url, path)).status != 200:
            again.abort()
            assert time.monotonic() < deadline, "the closed stream's slot never came back"
            time.sleep(0.1)
        opened.append(again)
        assert re.fullmatch(r"retry: \d+\n", again.block())
        over = RawStream(limited.base_url, path)
        assert over.status == 503, "a freed slot was given out twice"
        over.abort()
    finally:
        for stream in opened:
            stream.abort()


def test_head_requests_and_answers_without_a_stream_hold_no_slot(
    limited: GunicornInstance,
) -> None:
    task_id = submit(limited.base_url, "short")
    final = wait_terminal(limited.base_url, task_id)
    path = f"/api/task/stream/{task_id}"
    for _ in range(MAX_STREAMS + 2):
        head = RawStream(limited.base_url, path, method="HEAD")
        assert head.status == 200
        head.abort()
        ended = RawStream(limited.base_url, path, {"Last-Event-ID": str(final["version"])})
        assert ended.status == 204
        ended.abort()
        unknown = RawStream(limited.base_url, "/api/task/stream/" + "0" * 32)
        assert unknown.status == 404
        unknown.abort()
    # Had any of them leaked its slot, these would be refused.
    streams = [RawStream(limited.base_url, path) for _ in range(MAX_STREAMS)]
    try:
        assert [s.status for s in streams] == [200] * MAX_STREAMS
    finally:
        for stream in streams:
            stream.abort()


def test_reconnecting_at_or_past_the_terminal_version_is_204_below_it_gets_the_rest(
    limited: GunicornInstance,
) -> None:
    task_id = submit(limited.base_url, "the end")
    final = wait_terminal(limited.base_url, task_id)
    path = f"/api/task/stream/{task_id}"
    for seen in (final["version"], final["version"] + 7):
        stopped = read_stream(limited.base_url, path, headers={"Last-Event-ID": str(seen)})
        assert stopped.status == 204, seen
        assert stopped.messages == []
    rest = read_stream(limited.base_url, path, headers={"Last-Event-ID": str(final["version"] - 1)})
    assert rest.status == 200
    assert rest.ended
    assert [(m.id, m.json()["state"]) for m in rest.messages] == [(str(final["version"]), "done")]


def test_every_stream_starts_with_retry(limited: GunicornInstance) -> None:
    task_id = submit(limited.base_url, "retry me")
    wait_terminal(limited.base_url, task_id)
    stream = RawStream(limited.base_url, f"/api/task/stream/{task_id}")
    try:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        first = stream.block()
        assert (found := re.fullmatch(r"retry: (\d+)\n", first)), first
        assert 1000 <= int(found.group(1)) < 2000
        assert stream.block().startswith("id: 3\nevent: state\n")
        assert stream.block() == ""  # ended after the terminal event
    finally:
        stream.abort()


def test_a_quiet_stream_ends_after_the_idle_timeout_and_resumes(idle: GunicornInstance) -> None:
    blocker = submit(idle.base_url, LONG_TEXT)  # holds the only permit for 8 s
    task_id = submit(idle.base_url, "waiting behind it")
    path = f"/api/task/stream/{task_id}"
    started = time.monotonic()
    first = read_stream(idle.base_url, path, timeout=20)
    lasted = time.monotonic() - started
    assert first.status == 200
    assert first.ended
    assert [m.json()["state"] for m in first.messages] == ["queued"]
    keepalives = [text for _, text in first.comments if text == "keepalive"]
    assert len(keepalives) >= 2, first.comments  # 0.5 s keepalives did not keep it open
    assert any("no state event for 1.5 s" in text for _, text in first.comments)
    assert 1.5 <= lasted < 5, lasted
    # An EventSource reconnects with Last-Event-ID; a quiet task makes it end once more...
    again = read_stream(idle.base_url, path, headers={"Last-Event-ID": "1"}, timeout=20)
    assert again.ended
    assert all(m.json()["version"] > 1 for m in again.messages)
    # ...until the blocker is done and the task's own events come.
    wait_terminal(idle.base_url, blocker)
    final = wait_terminal(idle.base_url, task_id)
    last = again.messages[-1].id if again.messages else "1"
    rest = read_stream(idle.base_url, path, headers={"Last-Event-ID": str(last)}, timeout=20)
    assert rest.status == 200
    assert rest.messages[-1].json() == final


def test_by_default_streams_leave_a_thread_to_the_api(four_threads: GunicornInstance) -> None:
    # Four threads: three for streams, one kept. Without the limit a fourth stream would take
    # the last thread, and every API request would wait behind the streams.
    base = four_threads.base_url
    task_id = submit(base, LONG_TEXT)
    path = f"/api/task/stream/{task_id}"
    streams = [RawStream(base, path) for _ in range(3)]
    try:
        assert [s.status for s in streams] == [200, 200, 200]
        for stream in streams:
            assert stream.block().startswith("retry: ")
        fourth = RawStream(base, path)
        assert fourth.status == 503
        fourth.abort()
        started = time.monotonic()
        answer = call(base, "GET", f"/api/task/status/{task_id}", timeout=5)
        assert answer.status == 200
        assert time.monotonic() - started < 2
    finally:
        for stream in streams:
            stream.abort()
