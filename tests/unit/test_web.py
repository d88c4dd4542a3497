"""The HTTP layer through Flask's test client: in-process, memory backend, tone engine."""

from __future__ import annotations

import io
import json
import re
import time
import uuid
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from taskmon.app import create_app
from taskmon.domain import check_task_id
from taskmon.ports import Holder, Lease
from taskmon.runtime import Runtime
from taskmon.web.stream_slots import StreamSlots
from tests.support.timing import WAIT_S, wait_for

pytestmark = pytest.mark.usefixtures("clean_taskmon_env")

PROBLEM = "application/problem+json"
UNKNOWN_ID = "0" * 32
STATUS_FIELDS = {
    "task_id",
    "state",
    "version",
    "created_at",
    "started_at",
    "finished_at",
    "worker",
    "error",
    "result_url",
}
ACCEPTED_FIELDS = {"task_id", "state", "status_url", "stream_url", "result_url"}


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
        }
        app = create_app(settings | overrides)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["taskmon"].close()


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def stream_slots_of(app: Flask) -> StreamSlots:
    slots: StreamSlots = app.extensions["taskmon.stream_slots"]
    return slots


def rt_of(app: Flask) -> Runtime:
    runtime: Runtime = app.extensions["taskmon"]
    return runtime


def hold_permits(app: Flask) -> list[Lease]:
    """Take every permit from the test, so submitted tasks stay queued until released."""
    rt = rt_of(app)
    return [
        rt.semaphore.acquire(Holder("test", f"hold-{n}"), timeout=0)
        for n in range(rt.semaphore.limit())
    ]


def release(leases: list[Lease]) -> None:
    for lease in leases:
        lease.release()


def assert_common_headers(app: Flask, response: TestResponse) -> None:
    assert response.headers.get("X-Worker-Id") == rt_of(app).worker_id
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    assert "default-src 'self'" in response.headers.get("Content-Security-Policy", "")


def assert_problem(app: Flask, response: TestResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = json.loads(response.get_data(as_text=True))
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["type"] == "about:blank" or body["type"].startswith("urn:taskmon:problem:")
    assert_common_headers(app, response)
    return body  # type: ignore[no-any-return]


def submit(client: FlaskClient, body: Any, key: str | None = None) -> TestResponse:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post("/api/tts", json=body, headers=headers)


def wait_state(app: Flask, task_id: str, *states: str) -> dict[str, Any]:
    """The task's status once it is in one of `states` (woken by its events)."""
    monitor = rt_of(app).monitor
    deadline = time.monotonic() + WAIT_S
    with monitor.subscribe(task_id) as events:
        while True:
            task = monitor.get(task_id)
            assert task is not None
            if task.state.value in states:
                return task.status()
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"task {task_id} still {task.state}"
            events.get(timeout=min(remaining, 0.5))


# --- SSE reading --------------------------------------------------------------------------------


@dataclass
class Message:
    id: str | None
    event: str | None
    data: dict[str, Any]


def parse_chunk(chunk: str) -> Message | None:
    """One SSE block; None for a block that dispatches no event (a keepalive, a `retry:`)."""
    fields: dict[str, str] = {}
    for line in chunk.strip("\n").split("\n"):
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")
    if "data" not in fields:
        return None
    return Message(fields.get("id"), fields.get("event"), json.loads(fields["data"]))


class Stream:
    """An SSE response read chunk by chunk (the view yields one event or comment per chunk)."""

    def __init__(self, response: TestResponse) -> None:
        self.response = response
        self._chunks = iter(response.response)
        self.ended = False
        # Every stream starts with the reconnection delay it wants from an EventSource.
        first = self.next_chunk() or ""
        found = re.fullmatch(r"retry: (\d+)\n\n", first)
        assert found, f"the stream does not start with a retry field: {first!r}"
        self.retry_ms = int(found.group(1))

    def next_chunk(self) -> str | None:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self.ended = True
            return None
        return chunk.decode() if isinstance(chunk, bytes) else str(chunk)

    def read_to_end(self, timeout: float = WAIT_S) -> list[str]:
        """Every chunk until the stream ends; fails if it is still open after `timeout`."""
        deadline = time.monotonic() + timeout
        chunks = []
        while (chunk := self.next_chunk()) is not None:
            chunks.append(chunk)
            assert time.monotonic() < deadline, (
                f"stream still open after {timeout} s; last chunks: {chunks[-3:]}"
            )
        return chunks

    def close(self) -> None:
        self.response.close()


def open_stream(client: FlaskClient, task_id: str, last_event_id: str | None = None) -> Stream:
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    response = client.get(f"/api/task/stream/{task_id}", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/event-stream"
    return Stream(response)


def messages(chunks: list[str]) -> list[Message]:
    return [m for m in map(parse_chunk, chunks) if m is not None]


# --- errors are problem+json --------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe", b"{'text': 'single quotes'}"])
def test_400_bad_json(app: Flask, client: FlaskClient, body: bytes) -> None:
    response = client.post("/api/tts", data=body, content_type="application/json")
    problem = assert_problem(app, response, 400)
    assert problem["type"] == "urn:taskmon:problem:invalid-json"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": ""}, "text"),
        ({"text": "   "}, "text"),
        ({"text": 5}, "text"),
        ({"text": "x" * 5001}, "text"),
        ({}, "text"),
        ([], "body"),
        ("just a string", "body"),
        ({"text": "a", "speed": 2}, "speed"),
        ({"text": "a", "voice": "klingon"}, "voice"),
        ({"text": "a", "voice": ""}, "voice"),
    ],
)
def test_400_invalid_input(app: Flask, client: FlaskClient, body: Any, field: str) -> None:
    problem = assert_problem(app, submit(client, body), 400)
    assert problem["type"] == "urn:taskmon:problem:invalid-input"
    assert problem["field"] == field
    assert field in problem["detail"]
    assert rt_of(app).monitor.counts().total == 0


@pytest.mark.parametrize(
    "body",
    [b"[" * 30_000, b'{"text": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"],
    ids=["array", "inside-an-object"],
)
def test_400_json_nested_too_deeply(app: Flask, client: FlaskClient, body: bytes) -> None:
    # json.loads raises RecursionError here, which Werkzeug does not turn into a 400 (was a 500).
    response = client.post("/api/tts", data=body, content_type="application/json")
    problem = assert_problem(app, response, 400)
    assert problem["type"] == "urn:taskmon:problem:invalid-json"


def test_admin_400_for_json_nested_too_deeply(make_app: MakeApp) -> None:
    app = make_app(admin_token="t0ken-of-sixteen-chars")
    response = app.test_client().put(
        "/api/admin/concurrency",
        data=b"[" * 30_000,
        content_type="application/json",
        headers={"Authorization": "Bearer t0ken-of-sixteen-chars"},
    )
    assert assert_problem(app, response, 400)["field"] == "limit"


@pytest.mark.parametrize(
    ("body", "field"),
    [(b'{"text": "hi \\ud800"}', "text"), (b'{"text": "hi", "voice": "\\udc00"}', "voice")],
)
def test_400_lone_surrogate(app: Flask, client: FlaskClient, body: bytes, field: str) -> None:
    # JSON may escape a lone surrogate, which no UTF-8 encoder takes (the fingerprint was a 500).
    response = client.post("/api/tts", data=body, content_type="application/json")
    problem = assert_problem(app, response, 400)
    assert problem["field"] == field
    assert rt_of(app).monitor.counts().total == 0


def test_5000_characters_are_accepted(client: FlaskClient) -> None:
    assert submit(client, {"text": "x" * 5000}).status_code == 202


@pytest.mark.parametrize("kind", ["status", "stream", "result"])
@pytest.mark.parametrize("task_id", ["XYZ", "ABCDEF" + "0" * 26, "0" * 31, "0" * 33, "g" * 32])
def test_400_malformed_task_id(app: Flask, client: FlaskClient, kind: str, task_id: str) -> None:
    problem = assert_problem(app, client.get(f"/api/task/{kind}/{task_id}"), 400)
    assert problem["type"] == "urn:taskmon:problem:invalid-input"
    assert problem["field"] == "task_id"


@pytest.mark.parametrize("kind", ["status", "stream", "result"])
def test_404_unknown_task(app: Flask, client: FlaskClient, kind: str) -> None:
    problem = assert_problem(app, client.get(f"/api/task/{kind}/{UNKNOWN_ID}"), 404)
    assert problem["type"] == "urn:taskmon:problem:task-not-found"
    assert UNKNOWN_ID in problem["detail"]
    assert rt_of(app).monitor.hub.subscriber_count() == 0  # type: ignore[attr-defined]


def test_404_unknown_route(app: Flask, client: FlaskClient) -> None:
    problem = assert_problem(app, client.get("/api/nothing-here"), 404)
    assert problem["type"] == "about:blank"
    assert problem["title"] == "Not Found"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/api/tts", "POST"),
        ("PUT", "/api/tts", "POST"),
        ("DELETE", f"/api/task/status/{UNKNOWN_ID}", "GET"),
        ("POST", "/api/monitor/stats", "GET"),
    ],
)
def test_405(app: Flask, client: FlaskClient, method: str, path: str, allowed: str) -> None:
    response = client.open(path, method=method)
    problem = assert_problem(app, response, 405)
    assert problem["title"] == "Method Not Allowed"
    assert allowed in response.headers.get("Allow", "")


def test_413_oversized_body(make_app: MakeApp) -> None:
    app = make_app(max_body_bytes=1024)
    client = app.test_client()
    body = json.dumps({"text": "x" * 2000}).encode()
    response = client.post("/api/tts", data=body, content_type="application/json")
    assert_problem(app, response, 413)
    assert rt_of(app).monitor.counts().total == 0


def test_422_idempotency_key_reused(app: Flask, client: FlaskClient) -> None:
    first = submit(client, {"text": "one"}, key="order-1")
    assert first.status_code == 202
    response = submit(client, {"text": "two"}, key="order-1")
    problem = assert_problem(app, response, 422)
    assert problem["type"] == "urn:taskmon:problem:idempotency-key-reused"
    assert problem["task_id"] == first.json["task_id"]  # type: ignore[index]
    assert rt_of(app).monitor.counts().total == 1


@pytest.mark.parametrize("key", ["has space", "x" * 256, ""])
def test_400_malformed_idempotency_key(app: Flask, client: FlaskClient, key: str) -> None:
    problem = assert_problem(app, submit(client, {"text": "a"}, key=key), 400)
    assert problem["field"] == "Idempotency-Key"


def test_429_when_the_queue_is_full(make_app: MakeApp) -> None:
    app = make_app(max_pending=1, concurrency_limit=1)
    client = app.test_client()
    # The only permit is held here, so the first task stays pending for as long as needed.
    held = hold_permits(app)
    try:
        first = submit(client, {"text": "a long text " * 100})
        assert first.status_code == 202
        response = submit(client, {"text": "one more"})
        problem = assert_problem(app, response, 429)
        assert problem["type"] == "urn:taskmon:problem:queue-full"
        retry_after = response.headers.get("Retry-After", "")
        assert retry_after.isdigit()
        assert int(retry_after) >= 1
        assert retry_after in problem["detail"]
    finally:
        release(held)
    wait_state(app, first.json["task_id"], "done")  # type: ignore[index]


def test_worker_id_on_every_response(app: Flask, client: FlaskClient) -> None:
    accepted = submit(client, {"text": "hi"})
    task_id = accepted.json["task_id"]  # type: ignore[index]
    wait_state(app, task_id, "done")
    responses = [
        accepted,
        client.get(f"/api/task/status/{task_id}"),
        client.get(f"/api/task/result/{task_id}"),
        client.get("/api/monitor/stats"),
        client.get("/monitor"),
        client.get("/healthz"),
        client.get("/readyz"),
        client.get("/metrics"),
        client.get("/api/task/status/bad"),
        client.get("/nowhere"),
        client.get("/api/tts"),
    ]
    responses.append(client.get(f"/api/task/stream/{task_id}"))
    try:
        for response in responses:
            assert_common_headers(app, response)
    finally:
        for response in responses:
            response.close()  # the WAV and the stream hold a file and a generator open
    assert re.fullmatch(r"[^:\s]+:\d+", rt_of(app).worker_id)


# --- submit, replay, status ---------------------------------------------------------------------


def test_202_body_and_urls(app: Flask, client: FlaskClient) -> None:
    response = submit(client, {"text": "hello"})
    assert response.status_code == 202
    assert response.mimetype == "application/json"
    body = response.json
    assert body is not None
    assert set(body) == ACCEPTED_FIELDS
    task_id = body["task_id"]
    assert check_task_id(task_id) == task_id
    assert body["state"] == "queued"
    assert body["status_url"] == f"/api/task/status/{task_id}"
    assert body["stream_url"] == f"/api/task/stream/{task_id}"
    assert body["result_url"] == f"/api/task/result/{task_id}"
    assert response.headers["Location"] == body["status_url"]
    assert "Idempotent-Replayed" not in response.headers
    wait_state(app, task_id, "done")


def test_replay_returns_200_with_the_identical_body(make_app: MakeApp) -> None:
    app = make_app(concurrency_limit=1)
    client = app.test_client()
    held = hold_permits(app)
    try:
        first = submit(client, {"text": "pay once", "voice": "low"}, key="pay-1")
        replay = submit(client, {"text": "pay once", "voice": "low"}, key="pay-1")
    finally:
        release(held)
    assert first.status_code == 202
    assert replay.status_code == 200
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.get_data() == first.get_data()
    assert_common_headers(app, replay)
    task_id = first.json["task_id"]  # type: ignore[index]
    wait_state(app, task_id, "done")
    # After the task finished, the replay still answers with the original 202 body.
    later = submit(client, {"text": "pay once", "voice": "low"}, key="pay-1")
    assert later.status_code == 200
    assert later.headers.get("Idempotent-Replayed") == "true"
    assert later.get_data() == first.get_data()
    assert rt_of(app).monitor.counts().total == 1


def test_status_fields_before_and_after_done(make_app: MakeApp) -> None:
    app = make_app(concurrency_limit=1)
    client = app.test_client()
    held = hold_permits(app)
    try:
        task_id = submit(client, {"text": "status"}).json["task_id"]  # type: ignore[index]
        queued = client.get(f"/api/task/status/{task_id}")
    finally:
        release(held)
    assert queued.status_code == 200
    assert queued.mimetype == "application/json"
    assert queued.headers.get("Cache-Control") == "no-store"
    body = queued.json
    assert body is not None
    assert set(body) == STATUS_FIELDS
    assert body["task_id"] == task_id
    assert body["state"] == "queued"
    assert body["version"] == 1
    assert body["started_at"] is None
    assert body["finished_at"] is None
    assert body["error"] is None
    assert body["result_url"] is None
    assert body["worker"] == rt_of(app).worker_id

    wait_state(app, task_id, "done")
    done = client.get(f"/api/task/status/{task_id}").json
    assert done is not None
    assert set(done) == STATUS_FIELDS
    assert done["state"] == "done"
    assert done["version"] == 3
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]
    assert done["result_url"] == f"/api/task/result/{task_id}"
    assert done["error"] is None


# --- SSE ----------------------------------------------------------------------------------------


def test_sse_snapshot_first_then_every_state_then_the_end(make_app: MakeApp) -> None:
    app = make_app(concurrency_limit=1)
    client = app.test_client()
    held = hold_permits(app)
    try:
        task_id = submit(client, {"text": "stream me"}).json["task_id"]  # type: ignore[index]
        stream = open_stream(client, task_id)
        assert stream.response.headers.get("Cache-Control") == "no-store"
        assert_common_headers(app, stream.response)
        first = parse_chunk(stream.next_chunk() or "")
    finally:
        release(held)
    assert first is not None
    assert (first.id, first.event, first.data["state"]) == ("1", "state", "queued")
    rest = messages(stream.read_to_end())
    assert stream.ended
    events = [first, *rest]
    assert [m.data["state"] for m in events] == ["queued", "running", "done"]
    assert [m.id for m in events] == ["1", "2", "3"]
    for message in events:
        assert message.id == str(message.data["version"])
        assert message.event == "state"
        assert set(message.data) == STATUS_FIELDS
    assert events[-1].data["result_url"] == f"/api/task/result/{task_id}"
    assert rt_of(app).monitor.hub.subscriber_count() == 0  # type: ignore[attr-defined]


def test_sse_of_a_finished_task_is_its_snapshot_alone(app: Flask, client: FlaskClient) -> None:
    task_id = submit(client, {"text": "quick"}).json["task_id"]  # type: ignore[index]
    wait_state(app, task_id, "done")
    stream = open_stream(client, task_id)
    only = messages(stream.read_to_end())
    assert [(m.id, m.data["state"]) for m in only] == [("3", "done")]


@pytest.mark.parametrize("last_event_id", ["3", "4", "99"])
def test_sse_last_event_id_at_or_past_the_terminal_version_answers_204(
    app: Flask, client: FlaskClient, last_event_id: str
) -> None:
    # 204 is what tells an EventSource to stop reconnecting (HTML, "server-sent events").
    task_id = submit(client, {"text": "seen it all"}).json["task_id"]  # type: ignore[index]
    wait_state(app, task_id, "done")
    response = client.get(f"/api/task/stream/{task_id}", headers={"Last-Event-ID": last_event_id})
    assert response.status_code == 204
    assert response.get_data() == b""
    assert response.headers.get("Cache-Control") == "no-store"
    assert_common_headers(app, response)
    assert rt_of(app).monitor.hub.subscriber_count() == 0  # type: ignore[attr-defined]
    assert stream_slots_of(app).open == 0


def test_sse_last_event_id_below_the_terminal_version_gets_the_rest_then_ends(
    app: Flask, client: FlaskClient
) -> None:
    task_id = submit(client, {"text": "missed the end"}).json["task_id"]  # type: ignore[index]
    wait_state(app, task_id, "done")
    stream = open_stream(client, task_id, last_event_id="2")
    assert [(m.id, m.data["state"]) for m in messages(stream.read_to_end())] == [("3", "done")]
    assert stream.ended


def test_sse_last_event_id_skips_seen_versions(make_app: MakeApp) -> None:
    app = make_app(concurrency_limit=1)
    client = app.test_client()
    held = hold_permits(app)
    try:
        task_id = submit(client, {"text": "resume"}).json["task_id"]  # type: ignore[index]
        stream = open_stream(client, task_id, last_event_id="1")
    finally:
        release(held)
    got = messages(stream.read_to_end())
    assert [m.id for m in got] == ["2", "3"]
    assert [m.data["state"] for m in got] == ["running", "done"]


@pytest.mark.parametrize("header", ["abc", "-1", "", "1.5"])
def test_sse_unusable_last_event_id_streams_from_the_start(
    app: Flask, client: FlaskClient, header: str
) -> None:
    task_id = submit(client, {"text": "x"}).json["task_id"]  # type: ignore[index]
    wait_state(app, task_id, "done")
    stream = open_stream(client, task_id, last_event_id=header)
    assert [m.id for m in messages(stream.read_to_end())] == ["3"]


def test_sse_non_ascii_digit_last_event_id_is_not_a_server_error(
    app: Flask, client: FlaskClient
) -> None:
    # "²" is a latin-1 header byte (0xB2) for which str.isdigit() is True but int() fails.
    task_id = submit(client, {"text": "x"}).json["task_id"]  # type: ignore[index]
    wait_state(app, task_id, "done")
    response = client.get(f"/api/task/stream/{task_id}", headers={"Last-Event-ID": "\u00b2"})
    try:
        assert response.status_code in (200, 400), response.get_data(as_text=True)
    finally:
        response.close()
    assert rt_of(app).monitor.hub.subscriber_count() == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("header", ["9" * 5000, "0" * 5000 + "2"], ids=["nines", "zeros-then-2"])
def test_sse_last_event_id_of_thousands_of_digits_is_not_a_server_error(
    app: Flask, client: FlaskClient, header: str
) -> None:
    # int() refuses more than 4300 digits (a ValueError: was a 500); leading zeros still count.
    task_id = submit(client, {"text": "x"}).json["task_id"]  # type: ignore[index]
    wait_state(app, task_id, "done")
    if header.startswith("9"):
        # Past every version of a finished task: 204, the answer that stops an EventSource.
        response = client.get(f"/api/task/stream/{task_id}", headers={"Last-Event-ID": header})
        assert response.status_code == 204
        return
    stream = open_stream(client, task_id, last_event_id=header)
    try:
        seen = [m.id for m in messages(stream.read_to_end())]
    finally:
        stream.close()
    assert seen == ["3"]


def test_sse_keepalive_while_a_task_waits(make_app: MakeApp) -> None:
    app = make_app(concurrency_limit=1, sse_keepalive_s=0.05)
    client = app.test_client()
    held = hold_permits(app)
    try:
        task_id = submit(client, {"text": "waiting"}).json["task_id"]  # type: ignore[index]
        stream = open_stream(client, task_id)
        first = parse_chunk(stream.next_chunk() or "")
        assert first is not None
        assert first.data["state"] == "queued"
        second = stream.next_chunk()
        third = stream.next_chunk()
    finally:
        release(held)
    assert second == ": keepalive\n\n"
    assert third == ": keepalive\n\n"
    rest = messages(stream.read_to_end())
    assert [m.data["state"] for m in rest] == ["running", "done"]


def test_sse_last_event_id_ahead_of_the_task_still_ends(make_app: MakeApp) -> None:
    # A client whose Last-Event-ID is past the task's version (a bogus header, or a replayed one
    # after a store reset) gets nothing it has "seen" but the terminal event, and the stream
    # ends: without that event its reconnect (204) would leave it never knowing the end.
    app = make_app(concurrency_limit=1, sse_keepalive_s=0.05)
    client = app.test_client()
    held = hold_permits(app)
    try:
        task_id = submit(client, {"text": "ahead"}).json["task_id"]  # type: ignore[index]
        stream = open_stream(client, task_id, last_event_id="99")
    finally:
        release(held)
    wait_state(app, task_id, "done")
    try:
        chunks = stream.read_to_end(timeout=3)
    finally:
        stream.close()
    assert [(m.id, m.data["state"]) for m in messages(chunks)] == [("3", "done")]


def test_sse_closing_the_stream_detaches_its_subscription(make_app: MakeApp) -> None:
    app = make_app(concurrency_limit=1)
    client = app.test_client()
    hub = rt_of(app).monitor.hub  # type: ignore[attr-defined]
    held = hold_permits(app)
    try:
        task_id = submit(client, {"text": "bye"}).json["task_id"]  # type: ignore[index]
        stream = open_stream(client, task_id)
        assert stream.next_chunk() is not None
        assert hub.subscriber_count() == 1
        stream.close()  # the client went away mid-stream
        assert hub.subscriber_count() == 0
    finally:
        release(held)


def test_sse_head_request_leaves_no_subscription(make_app: MakeApp) -> None:
    app = make_app(concurrency_limit=1)
    client = app.test_client()
    hub = rt_of(app).monitor.hub  # type: ignore[attr-defined]
    held = hold_permits(app)
    try:
        task_id = submit(client, {"text": "head"}).json["task_id"]  # type: ignore[index]
        response = client.head(f"/api/task/stream/{task_id}")
        response.close()
        assert response.status_code == 200
        assert response.mimetype == "text/event-stream"
        assert hub.subscriber_count() == 0, "a HEAD request left a subscription in the hub"
    finally:
        release(held)


# --- results ------------------------------------------------------------------------------------


def test_result_409_before_done_then_wav(make_app: MakeApp) -> None:
    app = make_app(concurrency_limit=1)
    client = app.test_client()
    text = "result"
    held = hold_permits(app)
    try:
        task_id = submit(client, {"text": text}).json["task_id"]  # type: ignore[index]
        early = client.get(f"/api/task/result/{task_id}")
    finally:
        release(held)
    problem = assert_problem(app, early, 409)
    assert problem["type"] == "urn:taskmon:problem:result-not-ready"
    assert problem["state"] == "queued"

    wait_state(app, task_id, "done")
    response = client.get(f"/api/task/result/{task_id}")
    assert response.status_code == 200
    assert response.mimetype == "audio/wav"
    data = response.get_data()
    response.close()
    assert data[:4] == b"RIFF"
    assert data[8:12] == b"WAVE"
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (1, 16_000)
        assert wav.getnframes() == len(text) * 960
    assert_common_headers(app, response)


def test_result_410_when_the_file_is_gone(app: Flask, client: FlaskClient) -> None:
    task_id = submit(client, {"text": "gone"}).json["task_id"]  # type: ignore[index]
    wait_state(app, task_id, "done")
    rt_of(app).results.path_for(task_id).unlink()
    problem = assert_problem(app, client.get(f"/api/task/result/{task_id}"), 410)
    assert problem["type"] == "urn:taskmon:problem:result-gone"


def test_result_409_for_a_failed_task(make_app: MakeApp) -> None:
    app = make_app(concurrency_limit=1, permit_timeout_s=0.05)
    client = app.test_client()
    held = hold_permits(app)
    try:
        task_id = submit(client, {"text": "late"}).json["task_id"]  # type: ignore[index]
        failed = wait_state(app, task_id, "failed", "done")
    finally:
        release(held)
    assert failed["state"] == "failed"
    assert failed["error"]["code"] == "permit_timeout"
    problem = assert_problem(app, client.get(f"/api/task/result/{task_id}"), 409)
    assert problem["state"] == "failed"


# --- stats, pages, probes -----------------------------------------------------------------------


def test_stats(make_app: MakeApp) -> None:
    app = make_app(concurrency_limit=3)
    client = app.test_client()
    empty = client.get("/api/monitor/stats")
    assert empty.status_code == 200
    assert empty.headers.get("Cache-Control") == "no-store"
    body = empty.json
    assert body is not None
    assert set(body) == {
        "backend",
        "degraded",
        "counts",
        "total",
        "success_rate",
        "concurrency",
        "worker",
    }
    assert body["backend"] == "memory"
    assert body["degraded"] is False
    assert body["counts"] == {"queued": 0, "running": 0, "done": 0, "failed": 0}
    assert body["total"] == 0
    assert body["success_rate"] is None
    assert body["concurrency"] == {"limit": 3, "in_use": 0, "scope": "worker"}
    assert body["worker"] == rt_of(app).worker_id == empty.headers["X-Worker-Id"]

    ids = [submit(client, {"text": f"t{n}"}).json["task_id"] for n in range(2)]  # type: ignore[index]
    for task_id in ids:
        wait_state(app, task_id, "done")
    wait_for(lambda: rt_of(app).semaphore.in_use() == 0, message="permits back")
    lease = rt_of(app).semaphore.acquire(Holder("test", "x"), timeout=0)
    try:
        after = client.get("/api/monitor/stats").json
    finally:
        lease.release()
    assert after is not None
    assert after["counts"] == {"queued": 0, "running": 0, "done": 2, "failed": 0}
    assert after["total"] == 2
    assert after["success_rate"] == 1.0
    assert after["concurrency"] == {"limit": 3, "in_use": 1, "scope": "worker"}


ATTR_URL = re.compile(r"""\b(?:src|href|action)\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)


def test_monitor_page_loads_nothing_from_elsewhere(app: Flask, client: FlaskClient) -> None:
    response = client.get("/monitor")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert "http://" not in html
    assert "https://" not in html
    urls = ATTR_URL.findall(html)
    assert urls, "the page links its script and stylesheet"
    for url in urls:
        assert not url.startswith("//"), url
        assert url.startswith("/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        text = asset.get_data(as_text=True)
        asset.close()
        assert "http://" not in text, url
        assert "https://" not in text, url
    assert 'data-stats-url="/api/monitor/stats"' in html
    assert_common_headers(app, response)


def test_healthz(app: Flask, client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.json == {"status": "ok"}


def test_readyz_ready(app: Flask, client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.json == {
        "status": "ready",
        "backend": "memory",
        "target": "in-process",
        "degraded": False,
        "checks": {"monitor": True, "engine": True, "result_dir": True},
    }


def test_readyz_not_ready_without_a_result_dir(app: Flask, client: FlaskClient) -> None:
    rt_of(app).results.directory.rmdir()
    problem = assert_problem(app, client.get("/readyz"), 503)
    assert problem["checks"] == {"monitor": True, "engine": True, "result_dir": False}
    assert "result_dir" in problem["detail"]


def test_metrics(app: Flask, client: FlaskClient) -> None:
    submit(client, {"text": "count me"})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert "taskmon_tasks_submitted_total" in text
    assert 'outcome="created"' in text
    assert_common_headers(app, response)


def test_each_app_gets_its_own_fresh_ids(app: Flask, client: FlaskClient) -> None:
    ids = {submit(client, {"text": "same text"}).json["task_id"] for _ in range(3)}  # type: ignore[index]
    assert len(ids) == 3
    for task_id in ids:
        assert uuid.UUID(hex=task_id).version == 4
        wait_state(app, task_id, "done")
