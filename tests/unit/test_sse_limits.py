"""SSE as an EventSource needs it: `retry:` first, a bounded number of open streams, the idle
end. Flask test client, memory backend, tone engine; slots counted by the app itself."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from taskmon.app import create_app
from taskmon.config import default_sse_max_streams, load_settings
from taskmon.web.sse import RECONNECT_JITTER_MS, RECONNECT_MS
from taskmon.web.stream_slots import StreamSlots
from tests.support.timing import run_threads
from tests.unit.test_web import (
    Stream,
    assert_problem,
    hold_permits,
    messages,
    release,
    rt_of,
    stream_slots_of,
    submit,
    wait_state,
)

pytestmark = pytest.mark.usefixtures("clean_taskmon_env")

MakeApp = Callable[..., Flask]


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[MakeApp]:
    apps: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        settings: dict[str, Any] = {
            "backend": "memory",
            "engine": "tone",
            "tone_ms_per_char": 0,
            "result_dir": str(tmp_path / f"results-{len(apps)}"),
            "sse_keepalive_s": 0.2,
            "concurrency_limit": 1,
        }
        app = create_app(settings | overrides)
        apps.append(app)
        return app

    yield make
    for app in apps:
        rt_of(app).close()


def get_stream(app: Flask, task_id: str, headers: dict[str, str] | None = None) -> Any:
    return app.test_client().get(f"/api/task/stream/{task_id}", headers=headers or {})


# --- the retry field ----------------------------------------------------------------------------


def test_every_stream_starts_with_a_jittered_retry(make_app: MakeApp) -> None:
    app = make_app()
    client = app.test_client()
    task_id = submit(client, {"text": "retry"}).json["task_id"]  # type: ignore[index]
    wait_state(app, task_id, "done")
    delays = set()
    for _ in range(20):
        stream = Stream(get_stream(app, task_id))  # asserts the first block is `retry: N`
        delays.add(stream.retry_ms)
        stream.read_to_end()
    assert all(RECONNECT_MS <= d < RECONNECT_MS + RECONNECT_JITTER_MS for d in delays), delays
    assert len(delays) > 1, "every stream announced the same delay: no jitter"


# --- the stream limit ---------------------------------------------------------------------------


def test_past_the_limit_a_stream_is_503_and_a_closed_one_frees_its_slot(make_app: MakeApp) -> None:
    app = make_app(sse_max_streams=2)
    client = app.test_client()
    held = hold_permits(app)  # the task stays queued: its streams stay open
    try:
        task_id = submit(client, {"text": "crowded"}).json["task_id"]  # type: ignore[index]
        first, second = Stream(get_stream(app, task_id)), Stream(get_stream(app, task_id))
        assert stream_slots_of(app).open == 2
        refused = get_stream(app, task_id)
        problem = assert_problem(app, refused, 503)
        assert problem["type"] == "urn:taskmon:problem:too-many-streams"
        assert refused.headers["Retry-After"] == "5"
        assert refused.headers["Connection"] == "close"
        assert rt_of(app).monitor.hub.subscriber_count() == 2  # type: ignore[attr-defined]
        first.close()  # the client went away
        assert stream_slots_of(app).open == 1
        third = Stream(get_stream(app, task_id))
        assert stream_slots_of(app).open == 2
    finally:
        release(held)
    for stream in (second, third):
        assert [m.data["state"] for m in messages(stream.read_to_end())][-1] == "done"
        stream.close()
    assert stream_slots_of(app).open == 0


def test_every_way_a_stream_ends_gives_its_slot_back(make_app: MakeApp) -> None:
    app = make_app(sse_max_streams=1)
    client = app.test_client()
    task_id = submit(client, {"text": "slots"}).json["task_id"]  # type: ignore[index]
    wait_state(app, task_id, "done")
    for _ in range(3):  # each would hold the only slot if it leaked
        assert_problem(app, get_stream(app, "0" * 32), 404)
        assert get_stream(app, task_id, {"Last-Event-ID": "3"}).status_code == 204
        head = client.head(f"/api/task/stream/{task_id}")
        assert head.status_code == 200
        head.close()
        stream = Stream(get_stream(app, task_id))
        assert [m.id for m in messages(stream.read_to_end())] == ["3"]
        stream.close()
    assert stream_slots_of(app).open == 0


def test_default_limit_leaves_a_few_threads_to_the_api() -> None:
    # A quarter of the threads, at least one and at most eight.
    threads = (1, 2, 4, 8, 32, 64, 384, 1024)
    assert [default_sse_max_streams(n) for n in threads] == [1, 1, 3, 6, 24, 56, 376, 1016]
    assert load_settings({"threads": 8}).sse_stream_limit == 6
    assert load_settings({"threads": 8, "sse_max_streams": 8}).sse_stream_limit == 8


def test_slots_are_counted_exactly_under_threads() -> None:
    slots = StreamSlots(limit=50)
    taken: list[object] = []
    lock = threading.Lock()

    def grab() -> None:
        for _ in range(20):
            slot = slots.try_take()
            if slot is not None:
                with lock:
                    taken.append(slot)

    run_threads([grab] * 8)
    assert len(taken) == 50
    assert slots.open == 50
    assert slots.try_take() is None
    release_all = [slot.release for slot in taken]  # type: ignore[attr-defined]
    run_threads([*release_all, *release_all])  # twice each: a slot goes back once
    assert slots.open == 0


# --- the idle end -------------------------------------------------------------------------------


def test_a_stream_without_state_events_ends_after_the_idle_timeout(make_app: MakeApp) -> None:
    app = make_app(sse_keepalive_s=0.1, sse_idle_timeout_s=0.5)
    client = app.test_client()
    held = hold_permits(app)
    try:
        task_id = submit(client, {"text": "quiet"}).json["task_id"]  # type: ignore[index]
        opened = time.monotonic()
        stream = Stream(get_stream(app, task_id))
        chunks = stream.read_to_end(timeout=5)
        lasted = time.monotonic() - opened
        assert stream_slots_of(app).open == 1  # until the server closes the response
        stream.close()
        assert stream_slots_of(app).open == 0
        assert [m.data["state"] for m in messages(chunks)] == ["queued"]
        # Keepalives went out and did not keep it open.
        assert chunks.count(": keepalive\n\n") >= 2, chunks
        assert 0.5 <= lasted < 3, lasted
        last = chunks[-1]
        assert re.match(r"retry: \d+\n: no state event for 0.5 s; reconnect", last), last
        # The EventSource comes back with Last-Event-ID and waits for the rest.
        resumed = Stream(get_stream(app, task_id, {"Last-Event-ID": "1"}))
    finally:
        release(held)
    rest = messages(resumed.read_to_end())
    assert [m.data["state"] for m in rest] == ["running", "done"]


def test_state_events_keep_a_stream_open_past_the_idle_timeout(make_app: MakeApp) -> None:
    # queued at 0, running at 0.7 s (the permit released), done 0.6 s of synthesis later: the
    # stream outlives its 1 s idle timeout because each event restarts it.
    app = make_app(sse_keepalive_s=0.1, sse_idle_timeout_s=1.0, tone_ms_per_char=20)
    client = app.test_client()
    held = hold_permits(app)
    task_id = submit(client, {"text": "x" * 30}).json["task_id"]  # type: ignore[index]
    opened = time.monotonic()
    stream = Stream(get_stream(app, task_id))
    timer = threading.Timer(0.7, release, args=(held,))
    timer.start()
    try:
        chunks = stream.read_to_end(timeout=5)
    finally:
        timer.join()
    assert time.monotonic() - opened > 1.0
    assert [m.data["state"] for m in messages(chunks)] == ["queued", "running", "done"]
    assert not any("no state event" in chunk for chunk in chunks)


def test_refusals_are_logged_once_not_per_request(caplog: pytest.LogCaptureFixture) -> None:
    slots = StreamSlots(limit=1)
    held = slots.try_take()
    with caplog.at_level(logging.WARNING, logger="taskmon.web.stream_slots"):
        assert [slots.try_take() for _ in range(5)] == [None] * 5
    assert held is not None
    warnings = [r.getMessage() for r in caplog.records if r.name == "taskmon.web.stream_slots"]
    assert len(warnings) == 1, warnings
    assert "1 SSE streams open on this worker, its limit (TASKMON_SSE_MAX_STREAMS)" in warnings[0]
