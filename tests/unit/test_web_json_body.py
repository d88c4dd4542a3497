"""A JSON body is read only when its Content-Type says JSON: 415 otherwise (Flask test client)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from taskmon.app import create_app
from tests.unit.test_web import assert_problem, rt_of

pytestmark = pytest.mark.usefixtures("clean_taskmon_env")

TOKEN = "s3cret-admin-token"
BODY = json.dumps({"text": "media types"}).encode()
UNSUPPORTED = "urn:taskmon:problem:unsupported-media-type"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app(
        {
            "backend": "memory",
            "engine": "tone",
            "tone_ms_per_char": 0,
            "result_dir": str(tmp_path / "results"),
            "admin_token": TOKEN,
        }
    )
    yield app
    rt_of(app).close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def post(client: FlaskClient, content_type: str | None, key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return client.post("/api/tts", data=BODY, headers=headers)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/jsonp",
        "text/json",
        None,
    ],
)
def test_a_body_not_declared_json_is_415(
    app: Flask, client: FlaskClient, content_type: str | None
) -> None:
    response = post(client, content_type)
    problem = assert_problem(app, response, 415)
    assert problem["type"] == UNSUPPORTED
    assert "Content-Type: application/json" in problem["detail"]
    assert ("no Content-Type" in problem["detail"]) == (content_type is None)
    assert problem["accepted"] == ["application/json", "application/*+json"]
    assert response.headers["Accept-Post"] == "application/json"
    assert rt_of(app).monitor.counts().total == 0, "a refused body created a task"


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "Application/JSON",
        "application/merge-patch+json",
        "application/vnd.taskmon.tts+json; charset=utf-8",
    ],
)
def test_json_and_structured_json_types_are_accepted(
    client: FlaskClient, content_type: str
) -> None:
    response = post(client, content_type)
    assert response.status_code == 202, response.get_data(as_text=True)


def test_a_refused_body_does_not_use_up_its_idempotency_key(
    app: Flask, client: FlaskClient
) -> None:
    refused = post(client, "text/plain", key="media-1")
    assert_problem(app, refused, 415)
    first = post(client, "application/json", key="media-1")
    assert first.status_code == 202
    assert "Idempotent-Replayed" not in first.headers
    # The replay keeps working, with parameters on the type or without.
    replay = post(client, "application/json; charset=utf-8", key="media-1")
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_data() == first.get_data()
    # A replay sent as text/plain is refused like any such body, and changes nothing.
    assert_problem(app, post(client, "text/plain", key="media-1"), 415)
    assert rt_of(app).monitor.counts().total == 1


def test_a_json_typed_body_that_does_not_parse_is_still_400(
    app: Flask, client: FlaskClient
) -> None:
    response = client.post("/api/tts", data=b"{oops", content_type="application/json")
    assert assert_problem(app, response, 400)["type"] == "urn:taskmon:problem:invalid-json"


def put_limit(client: FlaskClient, content_type: str | None, body: bytes) -> Any:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return client.put("/api/admin/concurrency", data=body, headers=headers)


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/x-www-form-urlencoded"])
def test_admin_put_not_declared_json_is_415(
    app: Flask, client: FlaskClient, content_type: str | None
) -> None:
    before = rt_of(app).semaphore.limit()
    response = put_limit(client, content_type, b'{"limit": 7}')
    problem = assert_problem(app, response, 415)
    assert problem["type"] == UNSUPPORTED
    assert "Accept-Post" not in response.headers  # that header speaks of POST only
    assert rt_of(app).semaphore.limit() == before


def test_admin_put_json_is_applied_and_a_bad_one_still_400(app: Flask, client: FlaskClient) -> None:
    response = put_limit(client, "application/json; charset=utf-8", b'{"limit": 7}')
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json == {"limit": 7, "scope": "worker", "worker": rt_of(app).worker_id}
    broken = put_limit(client, "application/json", b"{limit")
    assert assert_problem(app, broken, 400)["field"] == "limit"


def test_admin_checks_the_token_before_the_media_type(app: Flask, client: FlaskClient) -> None:
    response = client.put("/api/admin/concurrency", data=b"x", content_type="text/plain")
    assert_problem(app, response, 401)
