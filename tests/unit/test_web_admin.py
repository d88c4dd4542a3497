"""The admin routes for permits and workers, and the public workers list, through Flask's test
client: in-process, memory backend, tone engine (the Redis side is tests/e2e/test_admin_ops.py).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from taskmon.app import create_app
from taskmon.ports import Holder, Lease, PermitTimeout
from taskmon.runtime import Runtime
from taskmon.web.admin import token_fingerprint
from tests.support.timing import WAIT_S, wait_for

pytestmark = pytest.mark.usefixtures("clean_taskmon_env")

TOKEN = "s3cret-admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WORKER_FIELDS = ["worker", "backend", "degraded", "in_flight", "pending", "draining",
                 "last_seen_s"]  # fmt: skip
NEW_ROUTES = [
    ("GET", "/api/admin/permits"),
    ("DELETE", "/api/admin/permits/abc"),
    ("GET", "/api/admin/workers"),
    ("POST", "/api/admin/workers/{me}/drain"),
    ("DELETE", "/api/admin/workers/{me}/drain"),
]


def make(tmp_path: Path, **overrides: Any) -> Flask:
    settings: dict[str, Any] = {
        "backend": "memory",
        "engine": "tone",
        "tone_ms_per_char": 0,
        "result_dir": str(tmp_path / "results"),
        "concurrency_limit": 1,
    }
    return create_app(settings | overrides)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    made = make(tmp_path, admin_token=TOKEN)
    yield made
    rt_of(made).close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def rt_of(app: Flask) -> Runtime:
    runtime: Runtime = app.extensions["taskmon"]
    return runtime


def body(response: Any) -> Any:
    return json.loads(response.get_data(as_text=True))


def test_every_new_admin_route_is_404_without_a_token(tmp_path: Path) -> None:
    app = make(tmp_path)
    try:
        me = rt_of(app).worker_id
        for method, path in NEW_ROUTES:
            answer = app.test_client().open(path.format(me=me), method=method, headers=AUTH)
            assert answer.status_code == 404, (method, path)
            assert answer.mimetype == "application/problem+json"
    finally:
        rt_of(app).close()


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer"])
def test_every_new_admin_route_is_401_without_the_bearer(
    app: Flask, client: FlaskClient, header: str | None
) -> None:
    me = rt_of(app).worker_id
    headers = {"Authorization": header} if header else {}
    for method, path in NEW_ROUTES:
        answer = client.open(path.format(me=me), method=method, headers=headers)
        assert answer.status_code == 401, (method, path, header)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert not rt_of(app).service.draining, "a refused drain changed nothing"


def test_the_workers_list_in_memory_mode_is_the_answering_worker(
    app: Flask, client: FlaskClient
) -> None:
    answer = client.get("/api/monitor/workers")
    assert answer.status_code == 200
    listed = body(answer)
    assert listed["worker"] == rt_of(app).worker_id
    assert listed["scope"] == "worker"
    assert listed["degraded"] is False
    [entry] = listed["workers"]
    assert list(entry) == WORKER_FIELDS
    assert entry == {
        "worker": rt_of(app).worker_id,
        "backend": "memory",
        "degraded": False,
        "in_flight": 0,
        "pending": 0,
        "draining": False,
        "last_seen_s": 0.0,
    }
    detailed = body(client.get("/api/admin/workers", headers=AUTH))["workers"][0]
    assert detailed["alive"] is True
    assert detailed["drain_ordered_s_ago"] is None


def test_a_permit_released_by_token_goes_to_the_next_waiter(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    sem = rt_of(app).semaphore
    stuck = sem.acquire(Holder("elsewhere:1", "stuck-task"), timeout=0, token="stuck-token-1")
    granted: list[Lease] = []
    waiter = threading.Thread(
        target=lambda: granted.append(sem.acquire(Holder("w:2", "next"), timeout=WAIT_S))
    )
    waiter.start()
    wait_for(lambda: len(sem.waiters()) == 1, message="the waiter queued")
    listed = body(client.get("/api/admin/permits", headers=AUTH))
    [holder] = listed["holders"]
    assert holder == {
        "worker": "elsewhere:1",
        "task_id": "stuck-task",
        "token": "stuck-token-1",
        "fencing": stuck.fencing,
        "expires_in_s": holder["expires_in_s"],
    }
    [queued] = listed["waiters"]
    assert (queued["worker"], queued["task_id"], queued["position"]) == ("w:2", "next", 1)
    assert queued["waiting_s"] >= 0
    # The public list has no tokens: a token releases its permit.
    public = body(client.get("/api/monitor/permits"))
    assert "token" not in public["holders"][0]
    assert "waiters" not in public

    with caplog.at_level(logging.INFO):
        answer = client.delete("/api/admin/permits/stuck-token-1", headers=AUTH)
    assert answer.status_code == 200
    released = body(answer)["released"]
    assert (released["token"], released["task_id"], released["worker"]) == (
        "stuck-token-1", "stuck-task", "elsewhere:1"
    )  # fmt: skip
    waiter.join(WAIT_S)
    assert granted
    assert granted[0].holder.task_id == "next", "the next waiter got the permit"
    assert stuck.renew() is False, "the holder finds its lease lost"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("admin:")]
    assert lines == [
        "admin: released permit stuck-to of task stuck-task held by worker elsewhere:1 "
        f"(fencing {stuck.fencing}) by 127.0.0.1 with token {token_fingerprint(TOKEN)}"
    ]
    assert TOKEN not in caplog.text
    again = client.delete("/api/admin/permits/stuck-token-1", headers=AUTH)
    assert again.status_code == 404
    assert body(again)["type"].endswith("permit-not-found")
    granted[0].release()


def test_a_synthesis_whose_permit_is_released_stops_as_on_a_lost_lease(tmp_path: Path) -> None:
    app = make(tmp_path, admin_token=TOKEN, tone_ms_per_char=50, lease_ttl_ms=300)
    client = app.test_client()
    try:
        task_id = body(client.post("/api/tts", json={"text": "x" * 200}))["task_id"]

        def holder_token() -> str | None:
            holders = body(client.get("/api/admin/permits", headers=AUTH))["holders"]
            return next((h["token"] for h in holders if h["task_id"] == task_id), None)

        wait_for(lambda: holder_token() is not None, message="the synthesis holds its permit")
        token = holder_token()
        assert client.delete(f"/api/admin/permits/{token}", headers=AUTH).status_code == 200

        def state() -> Any:
            return body(client.get(f"/api/task/status/{task_id}"))

        wait_for(lambda: state()["state"] == "failed", message="the task failed")
        assert state()["error"]["code"] == "lease_lost"
        assert client.get(f"/api/task/result/{task_id}").status_code == 409
    finally:
        rt_of(app).close()


def test_drain_refuses_new_tasks_and_readiness_until_cancelled(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    me = rt_of(app).worker_id
    key = {"Idempotency-Key": "before-the-drain"}
    assert client.post("/api/tts", json={"text": "before"}, headers=key).status_code == 202
    with caplog.at_level(logging.INFO):
        ordered = client.post(f"/api/admin/workers/{me}/drain", headers=AUTH)
    assert ordered.status_code == 202
    assert body(ordered)["order"] == {"worker": me, "drain": True, "applies_within_s": 0.0}
    # A client retrying what it sent before the drain gets its own task, not a refusal.
    replayed = client.post("/api/tts", json={"text": "before"}, headers=key)
    assert replayed.status_code == 200
    assert replayed.headers["Idempotent-Replayed"] == "true"
    refused = client.post("/api/tts", json={"text": "during"})
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert body(refused)["type"] == "urn:taskmon:problem:draining"
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert body(ready)["draining"] is True
    listed = body(client.get("/api/monitor/workers"))["workers"][0]
    assert listed["draining"] is True
    assert client.delete(f"/api/admin/workers/{me}/drain", headers=AUTH).status_code == 202
    assert client.post("/api/tts", json={"text": "after"}).status_code == 202
    assert client.get("/readyz").status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("admin:")]
    fingerprint = token_fingerprint(TOKEN)
    assert lines == [
        f"admin: drain of worker {me} requested by 127.0.0.1 with token {fingerprint}",
        f"admin: drain of worker {me} cancelled by 127.0.0.1 with token {fingerprint}",
    ]
    assert TOKEN not in caplog.text


def test_a_drain_of_an_unknown_worker_is_404(app: Flask, client: FlaskClient) -> None:
    answer = client.post("/api/admin/workers/nohost:1/drain", headers=AUTH)
    assert answer.status_code == 404
    assert body(answer)["type"] == "urn:taskmon:problem:worker-not-found"
    assert not rt_of(app).service.draining


def test_the_concurrency_change_is_logged_without_the_token(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        answer = client.put("/api/admin/concurrency", json={"limit": 3}, headers=AUTH)
    assert answer.status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("admin:")]
    assert lines == [
        f"admin: concurrency limit set to 3 (worker scope) by 127.0.0.1 with token "
        f"{token_fingerprint(TOKEN)}"
    ]
    assert TOKEN not in caplog.text


def test_a_waiter_that_times_out_leaves_the_admin_queue(app: Flask) -> None:
    sem = rt_of(app).semaphore
    held = sem.acquire(Holder("w", "held"), timeout=0)
    with pytest.raises(PermitTimeout):
        sem.acquire(Holder("w", "late"), timeout=0.05)
    assert sem.waiters() == []
    held.release()
