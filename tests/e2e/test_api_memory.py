"""The whole API against real `gunicorn -w 4` processes, memory backend, tone engine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from taskmon.harness.sse_client import read_stream
from taskmon.harness.stack import GunicornInstance, http_get
from tests.support.http import PinnedClient, wav_duration_s

pytestmark = pytest.mark.e2e

WORKER_ID = re.compile(r"^[^:\s]+:\d+$")


def test_submit_poll_and_download_the_wav(pinned: PinnedClient, tmp_path: Path) -> None:
    text = "hello from four workers"
    status, body = pinned.json("POST", "/api/tts", {"text": text})
    assert status == 202, body
    assert set(body) == {"task_id", "state", "status_url", "stream_url", "result_url"}
    assert body["state"] == "queued"

    final = pinned.wait_terminal(body["task_id"])
    assert final["state"] == "done", final
    assert final["version"] == 3
    assert final["result_url"] == body["result_url"]
    assert final["created_at"] <= final["started_at"] <= final["finished_at"]
    assert final["worker"] in pinned.workers_seen

    code, headers, wav = pinned.request("GET", body["result_url"])
    assert code == 200
    assert headers["Content-Type"] == "audio/wav"
    assert wav_duration_s(wav, tmp_path) == pytest.approx(len(text) * 0.060)
    assert len(pinned.workers_seen) == 1, "a pinned connection must stay on one worker"


def test_sse_stream_reads_every_state_to_the_end(pinned: PinnedClient) -> None:
    status, body = pinned.json("POST", "/api/tts", {"text": "stream me " * 20})
    assert status == 202
    stream = read_stream("", body["stream_url"], connection=pinned.connection, timeout=30)
    assert stream.status == 200
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    assert stream.headers["X-Worker-Id"] in pinned.workers_seen
    assert stream.ended, "the stream must end after the terminal state"
    states = [message.json()["state"] for message in stream.messages]
    versions = [int(message.id or 0) for message in stream.messages]
    assert states[-1] == "done"
    assert versions == sorted(set(versions)), "versions only grow"
    assert all(m.event == "state" for m in stream.messages)
    assert all(int(m.id or 0) == m.json()["version"] for m in stream.messages)


def test_sse_keepalive_comments_while_a_task_waits(memory_stack: GunicornInstance) -> None:
    # 700 characters at 5 ms each keep the engine busy 3.5 s between the running and the done
    # event, so the 1 s keepalive must fire at least twice.
    client = PinnedClient(memory_stack.base_url)
    try:
        status, body = client.json("POST", "/api/tts", {"text": "w" * 700})  # ~3.5 s
        assert status == 202
        stream = read_stream("", body["stream_url"], connection=client.connection, timeout=30)
    finally:
        client.close()
    assert stream.ended
    assert stream.messages[-1].json()["state"] == "done"
    assert any(text == "keepalive" for _, text in stream.comments), stream.comments


def test_last_event_id_skips_versions_already_seen(pinned: PinnedClient) -> None:
    _, body = pinned.json("POST", "/api/tts", {"text": "resume"})
    final = pinned.wait_terminal(body["task_id"])
    resumed = read_stream(
        "",
        body["stream_url"],
        headers={"Last-Event-ID": str(final["version"] - 1)},
        connection=pinned.connection,
    )
    assert [m.json()["version"] for m in resumed.messages] == [final["version"]]
    nothing_new = read_stream(
        "",
        body["stream_url"],
        headers={"Last-Event-ID": str(final["version"])},
        connection=pinned.connection,
    )
    # 204: what tells an EventSource that saw the end to stop reconnecting.
    assert nothing_new.status == 204
    assert nothing_new.messages == []


def test_idempotency_key_replays_and_rejects_another_payload(pinned: PinnedClient) -> None:
    key = {"Idempotency-Key": "e2e-key-1"}
    first_status, first_headers, first = pinned.request("POST", "/api/tts", {"text": "once"}, key)
    again_status, again_headers, again = pinned.request("POST", "/api/tts", {"text": "once"}, key)
    other_status, other_headers, _ = pinned.request("POST", "/api/tts", {"text": "twice"}, key)
    assert first_status == 202
    assert "Idempotent-Replayed" not in first_headers
    assert again_status == 200
    assert again_headers["Idempotent-Replayed"] == "true"
    assert again == first
    assert other_status == 422
    assert other_headers["Content-Type"] == "application/problem+json"


def test_errors_are_problem_json_with_worker_id(memory_stack: GunicornInstance) -> None:
    client = PinnedClient(memory_stack.base_url)
    try:
        cases = [
            ("POST", "/api/tts", {"text": ""}, 400),
            ("POST", "/api/tts", {"text": "x" * 5001}, 400),
            ("POST", "/api/tts", {"text": "hi", "voice": "no-such-voice"}, 400),
            ("GET", "/api/task/status/not-an-id", None, 400),
            ("GET", "/api/task/status/" + "0" * 32, None, 404),
            ("GET", "/api/task/stream/" + "0" * 32, None, 404),
            ("GET", "/api/task/result/" + "0" * 32, None, 404),
            ("DELETE", "/api/tts", None, 405),
        ]
        for method, path, body, expected in cases:
            status, headers, data = client.request(method, path, body)
            assert status == expected, (method, path, data)
            assert headers["Content-Type"] == "application/problem+json"
            assert WORKER_ID.match(headers["X-Worker-Id"])
    finally:
        client.close()


def test_stats_monitor_page_and_probes(memory_stack: GunicornInstance) -> None:
    stats = memory_stack.stats()
    assert stats["backend"] == "memory"
    assert stats["degraded"] is False
    assert set(stats["counts"]) == {"queued", "running", "done", "failed"}
    assert stats["total"] == sum(stats["counts"].values())
    assert stats["concurrency"]["limit"] == 2
    assert WORKER_ID.match(stats["worker"])

    status, headers, page = http_get(memory_stack.base_url, "/monitor")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    html = page.decode()
    assert 'data-stats-url="/api/monitor/stats"' in html
    assert not re.search(r"""(src|href)=["'](https?:)?//""", html), "no external assets"
    for asset in re.findall(r"""(?:src|href)="(/static/[^"]+)\"""", html):
        assert http_get(memory_stack.base_url, asset)[0] == 200

    assert http_get(memory_stack.base_url, "/healthz")[0] == 200
    assert http_get(memory_stack.base_url, "/readyz")[0] == 200
    status, _, metrics = http_get(memory_stack.base_url, "/metrics")
    assert status == 200
    assert b"taskmon_tasks_submitted_total" in metrics
