"""The web contract of a degraded worker: the Flask app over a real runtime on a real
redis-server that is stopped under it. Every answer is what docs/api.md says ("When Redis does
not answer"): 421 for tasks it does not know, 429 under `reject`, the worker's own numbers in
stats and permits, /readyz still ready, SSE that keeps an EventSource reconnecting."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from taskmon.app import create_app
from taskmon.harness.redis_server import RedisServer
from taskmon.web.context import runtime_of
from tests.support.failover_rig import KEYS
from tests.support.timing import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("clean_taskmon_env")]

UNKNOWN = "0" * 32
TOKEN = "s3cret-admin-token"
MakeApp = Callable[..., Flask]


@pytest.fixture
def make_app(own_redis: RedisServer, tmp_path: Path) -> Iterator[MakeApp]:
    made: list[Flask] = []

    def factory(**overrides: Any) -> Flask:
        app = create_app({
            "backend": "redis", "redis_url": own_redis.url, "key_prefix": KEYS.prefix,
            "engine": "tone", "tone_ms_per_char": 0, "result_dir": tmp_path / "results",
            "admin_token": TOKEN, "sse_keepalive_s": 1, **overrides,
        })  # fmt: skip
        made.append(app)
        return app

    yield factory
    for app in made:
        runtime_of(app).close(wait=True)


def degraded(client: FlaskClient) -> bool:
    body = client.get("/api/monitor/stats").json
    return bool(body and body["degraded"])


def test_a_degraded_worker_answers_as_documented(own_redis: RedisServer, make_app: MakeApp) -> None:
    app = make_app()
    client = app.test_client()
    accepted = client.post("/api/tts", json={"text": "mine"})
    assert accepted.status_code == 202
    mine = accepted.json["task_id"]  # type: ignore[index]
    own_redis.stop_for_now()

    during = client.post("/api/tts", json={"text": "accepted while Redis is away"})
    assert during.status_code == 202, "partition: accepted and run here"
    stats = client.get("/api/monitor/stats").json
    assert stats is not None
    assert (stats["backend"], stats["degraded"], stats["concurrency"]["scope"]) == (
        "memory", True, "worker",
    )  # fmt: skip
    assert stats["fallback_policy"] == "partition"
    assert client.get(f"/api/task/status/{mine}").status_code == 200, "its own task, from memory"

    for path in (f"/api/task/status/{UNKNOWN}", f"/api/task/result/{UNKNOWN}"):
        unknown = client.get(path)
        assert unknown.status_code == 421, path
        assert unknown.content_type == "application/problem+json"
        assert unknown.headers["Retry-After"] == "1"
        assert unknown.headers["Connection"] == "close"
        body = unknown.json
        assert body is not None
        assert body["type"] == "urn:taskmon:problem:task-unknown-while-degraded"
        assert (body["degraded"], body["task_id"]) == (True, UNKNOWN)

    stream = client.get(f"/api/task/stream/{UNKNOWN}")
    assert stream.status_code == 200, "an EventSource fails for good on anything else"
    assert stream.mimetype == "text/event-stream"
    text = stream.get_data(as_text=True)
    assert text.startswith("retry: 1000\nevent: degraded\ndata: ")
    assert '"degraded":true' in text

    ready = client.get("/readyz")
    assert ready.status_code == 200, "a degraded worker still serves"
    assert (ready.json["status"], ready.json["degraded"]) == ("degraded", True)  # type: ignore[index]
    assert ready.json["checks"]["monitor"] is False  # type: ignore[index]

    permits = client.get("/api/monitor/permits").json
    assert permits is not None
    assert (permits["degraded"], permits["scope"]) == (True, "worker")

    admin = client.put(
        "/api/admin/concurrency", json={"limit": 3}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert admin.status_code == 503, "the global cap cannot change while Redis is away"

    own_redis.start()
    wait_for(lambda: not degraded(client), timeout=10, message="re-promoted")
    settling = client.get(f"/api/task/status/{UNKNOWN}")
    assert settling.status_code == 421, "right after re-promotion: not yet a 404"
    assert settling.json["settling"] is True  # type: ignore[index]
    assert settling.json["degraded"] is False  # type: ignore[index]
    wait_for(lambda: client.get(f"/api/task/status/{UNKNOWN}").status_code == 404, timeout=10)
    assert client.get(f"/api/task/status/{during.json['task_id']}").status_code == 200  # type: ignore[index]


def test_the_reject_policy_answers_429_degraded_rejecting(
    own_redis: RedisServer, make_app: MakeApp
) -> None:
    client = make_app(fallback_policy="reject").test_client()
    own_redis.stop_for_now()
    client.get("/api/monitor/stats")  # trips it
    refused = client.post("/api/tts", json={"text": "refused"})
    assert refused.status_code == 429
    body = refused.json
    assert body is not None
    assert body["type"] == "urn:taskmon:problem:degraded-rejecting"
    assert body["degraded"] is True
    assert int(refused.headers["Retry-After"]) >= 1


def test_readyz_alone_degrades_an_idle_worker_on_a_hung_redis(
    own_redis: RedisServer, make_app: MakeApp
) -> None:
    """A load balancer's probe may be all an idle worker hears: a failed ping trips it, so the
    worker stays in the pool as degraded instead of dropping out as not ready."""
    app = make_app(lease_ttl_ms=60_000)  # no heartbeat tick during the test
    client = app.test_client()
    own_redis.pause()
    try:
        first = client.get("/readyz")
        primary: Any = runtime_of(app).monitor._primary  # type: ignore[attr-defined]

        def no_ping() -> bool:
            raise AssertionError("a degraded worker's /readyz must not wait out a ping")

        primary.ping = no_ping
        second = client.get("/readyz")
    finally:
        own_redis.resume()
    assert (first.status_code, first.json["status"]) == (200, "degraded")  # type: ignore[index]
    assert (second.status_code, second.json["status"]) == (200, "degraded")  # type: ignore[index]
