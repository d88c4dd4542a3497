"""GET /api/monitor/recent on the memory backend: the list the monitor page shows, its fields,
its limit rule (400 invalid-input), and a text shown only as an excerpt, verbatim."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from taskmon.app import create_app
from taskmon.domain import EXCERPT_CHARS
from tests.support.timing import wait_for
from tests.unit.test_web import (
    assert_common_headers,
    assert_problem,
    hold_permits,
    release,
    rt_of,
    submit,
    wait_state,
)

pytestmark = pytest.mark.usefixtures("clean_taskmon_env")

SUMMARY_FIELDS = {
    "task_id", "state", "version", "worker", "created_at", "started_at", "finished_at",
    "queued_s", "run_s", "error", "text_excerpt", "status_url", "result_url",
}  # fmt: skip


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    settings = {"backend": "memory", "engine": "tone", "tone_ms_per_char": 0}
    made = create_app(settings | {"result_dir": str(tmp_path / "results")})
    yield made
    made.extensions["taskmon"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_recent_lists_newest_first_with_the_oldest_queued(app: Flask, client: FlaskClient) -> None:
    markup = "<img src=x onerror=alert(1)>"
    first = submit(client, {"text": "first"}).json
    assert first is not None
    wait_state(app, first["task_id"], "done")
    wait_for(lambda: rt_of(app).semaphore.in_use() == 0, message="permits back")
    leases = hold_permits(app)
    try:
        queued = [submit(client, {"text": f"{markup} {n}"}).json for n in range(2)]
        response = client.get("/api/monitor/recent")
    finally:
        release(leases)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert_common_headers(app, response)
    body = response.json
    assert body is not None
    assert (body["backend"], body["degraded"], body["scope"], body["limit"]) == (
        "memory", False, "worker", 50,
    )  # fmt: skip
    ids = [task["task_id"] for task in body["tasks"]]
    assert ids == [queued[1]["task_id"], queued[0]["task_id"], first["task_id"]]  # type: ignore[index]
    for task in body["tasks"]:
        assert set(task) == SUMMARY_FIELDS
    newest, done = body["tasks"][0], body["tasks"][2]
    assert (newest["state"], newest["text_excerpt"], newest["run_s"]) == (
        "queued", f"{markup} 1", None,
    )  # fmt: skip
    assert newest["result_url"] is None
    assert done["state"] == "done"
    assert done["result_url"] == f"/api/task/result/{first['task_id']}"
    assert done["run_s"] >= 0
    assert done["queued_s"] >= 0
    assert body["oldest_queued"]["task_id"] == queued[0]["task_id"]  # type: ignore[index]
    wav = client.get(done["result_url"])
    assert (wav.status_code, wav.mimetype) == (200, "audio/wav")
    wav.close()


def test_recent_limit_and_excerpt(app: Flask, client: FlaskClient) -> None:
    for n in range(3):
        submit(client, {"text": f"{n} " + "long text " * 100})
    body = client.get("/api/monitor/recent?limit=2").json
    assert body is not None
    assert len(body["tasks"]) == 2
    assert body["limit"] == 2
    assert all(len(task["text_excerpt"]) == EXCERPT_CHARS for task in body["tasks"])
    assert len(client.get("/api/monitor/recent?limit=200").json["tasks"]) == 3  # type: ignore[index]


@pytest.mark.parametrize("limit", ["0", "201", "-1", "abc", "1.5", "", "²"])
def test_recent_refuses_a_bad_limit(app: Flask, client: FlaskClient, limit: str) -> None:
    body = assert_problem(app, client.get(f"/api/monitor/recent?limit={limit}"), 400)
    assert body["field"] == "limit"
    assert "1 to 200" in body["detail"]


INLINE = re.compile(r"<script(?![^>]*\bsrc=)|\sstyle=|\son[a-z]+=|javascript:", re.IGNORECASE)
HTML_SINKS = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(")


def test_the_page_names_its_endpoints_and_nothing_inline(client: FlaskClient) -> None:
    response = client.get("/monitor")
    html = response.get_data(as_text=True)
    for name, url in [("recent", "/api/monitor/recent"), ("workers", "/api/monitor/workers")]:
        assert f'data-{name}-url="{url}"' in html
    # The CSP (default-src 'self') refuses inline scripts, styles and handlers: none is needed.
    assert INLINE.search(html) is None, INLINE.search(html)
    for name in ("monitor_charts.js", "monitor.js"):
        assert f'src="/static/{name}"' in html
        script = client.get(f"/static/{name}")
        assert script.status_code == 200
        source = script.get_data(as_text=True)
        script.close()
        found = [sink for sink in HTML_SINKS if sink in source]
        assert not found, f"{name} parses strings as HTML: {found}; use textContent"
    # Deferred scripts run in document order: the charts' module before the page that uses it.
    assert html.index("monitor_charts.js") < html.index('/static/monitor.js"')


def test_the_favicon_is_no_content(client: FlaskClient) -> None:
    response = client.get("/favicon.ico")
    assert (response.status_code, response.get_data()) == (204, b"")
