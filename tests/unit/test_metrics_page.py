"""/metrics on the Flask test client: the HTTP latency histogram's labels stay few (endpoint
name, method, status class; never a path or a task id), memory mode exports no global
figures, and a worker that started on memory because Redis was away says `taskmon_redis_up 0`
at once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from taskmon.app import create_app
from taskmon.harness.processes import free_port
from tests.support.scrapes import samples_of

pytestmark = pytest.mark.usefixtures("clean_taskmon_env")
HISTOGRAM = "taskmon_http_request_duration_seconds_count"


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Any]:
    apps: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        settings = {"backend": "memory", "engine": "tone", "tone_ms_per_char": 0,
                    "result_dir": str(tmp_path / f"results-{len(apps)}")}  # fmt: skip
        apps.append(create_app(settings | overrides))
        return apps[-1]

    yield make
    for app in apps:
        app.extensions["taskmon"].close()


def scraped(app: Flask) -> dict[str, float]:
    answer = app.test_client().get("/metrics")
    assert answer.status_code == 200
    return samples_of(answer.get_data(as_text=True))


def count(samples: dict[str, float], endpoint: str, method: str, status: str) -> float:
    key = f'{HISTOGRAM}{{endpoint="{endpoint}",method="{method}",status="{status}"}}'
    return samples.get(key, 0.0)


def test_every_answer_is_observed_by_endpoint_method_and_status_class(make_app: Any) -> None:
    app = make_app()
    client = app.test_client()
    task_id = uuid.uuid4().hex
    before = scraped(app)
    assert client.get(f"/api/task/status/{task_id}").status_code == 404
    assert client.post("/api/tts", json={"text": "hi"}).status_code == 202
    assert client.get("/no/such/path").status_code == 404
    assert client.open("/api/tts", method="BREW").status_code == 405
    after = scraped(app)
    grew = {
        labels: count(after, *labels) - count(before, *labels)
        for labels in [
            ("api.status", "GET", "4xx"), ("api.submit", "POST", "2xx"),
            ("unmatched", "GET", "4xx"), ("unmatched", "other", "4xx"),
        ]
    }  # fmt: skip
    assert grew == dict.fromkeys(grew, 1.0)
    assert not [name for name in after if task_id in name or "/no/such" in name]


def test_memory_mode_exports_no_global_figures(make_app: Any) -> None:
    names = {name.split("{", 1)[0] for name in scraped(make_app())}
    assert "taskmon_degraded" in names
    assert not [n for n in names if n.startswith("taskmon_global_") or n == "taskmon_redis_up"]


def test_a_worker_that_started_on_memory_says_redis_is_not_up(make_app: Any) -> None:
    nobody = f"redis://127.0.0.1:{free_port('127.0.0.1')}/0"  # nothing listens there
    app = make_app(backend="auto", redis_url=nobody)
    started = time.monotonic()
    samples = scraped(app)
    assert time.monotonic() - started < 0.5
    assert samples["taskmon_redis_up"] == 0
    assert not [n for n in samples if n.startswith("taskmon_global_tasks")]
