"""The OpenAPI document held to the code: it is valid OpenAPI 3.1, it lists exactly the routes
the Flask app serves, and its schemas say what the views build, field for field.

The answers are real ones (the Flask test client, memory backend, tone engine) validated
against the document's own schemas; the live, multi-worker Redis stack is fuzzed from the same
document in tests/e2e/test_fuzz.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # it ships no type information
import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.test import TestResponse
from werkzeug.wrappers import Response

import taskmon
from taskmon.app import create_app
from taskmon.config import FallbackPolicy
from taskmon.domain import (
    IDEMPOTENCY_KEY_PATTERN,
    MAX_TEXT_CHARS,
    MAX_VOICE_CHARS,
    TASK_ID_PATTERN,
    ErrorCode,
    Task,
    TaskError,
    TaskRequest,
    TaskState,
)
from taskmon.ports import Holder
from taskmon.web import admin
from taskmon.web.openapi import document
from taskmon.web.status import accepted_json, status_json
from tests.support.timing import wait_for

pytestmark = pytest.mark.usefixtures("clean_taskmon_env")

DOC_URI = "urn:taskmon:openapi"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
ADMIN_TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app(
        {
            "backend": "memory",
            "engine": "tone",
            "tone_ms_per_char": 0,
            "result_dir": str(tmp_path / "results"),
            "admin_token": ADMIN_TOKEN,
        }
    )
    yield app
    app.extensions["taskmon"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = doc["components"]["schemas"][name]
    return found


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local `$ref` (components/...) until an object that is not one."""
    while "$ref" in node:
        pointer = node["$ref"].removeprefix("#/").split("/")
        target: Any = doc
        for part in pointer:
            target = target[part]
        node = target
    return node


def validate_against(doc: dict[str, Any], instance: Any, subschema: dict[str, Any]) -> None:
    """Validate `instance` with the document's schemas, its `$ref`s resolved inside it."""
    registry: Registry[Any] = Registry().with_resource(
        DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    rooted = json.loads(json.dumps(subschema).replace('"#/components/', f'"{DOC_URI}#/components/'))
    jsonschema.Draft202012Validator(
        rooted, registry=registry, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(instance)


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def assert_conforms(doc: dict[str, Any], response: Response, path: str, method: str) -> Any:
    """The answer is one the document lists for the operation: status, media type, required
    headers, body schema. Returns the decoded JSON body (None for other media types)."""
    operation = doc["paths"][path][method]
    documented = operation["responses"]
    status = str(response.status_code)
    assert status in documented, f"{method.upper()} {path} answered undocumented {status}"
    spec = resolve(doc, documented[status])
    for name, declared in spec.get("headers", {}).items():
        header = resolve(doc, declared)
        if header.get("required"):
            assert name in response.headers, f"{status} of {path} lacks {name}"
            validate_against(doc, response.headers[name], header["schema"])
    content = spec.get("content", {})
    if not content:
        assert response.get_data() == b""
        return None
    mimetype = response.mimetype or ""
    assert mimetype in content, f"{mimetype} not in {sorted(content)}"
    if "json" not in mimetype:
        return None
    body = response.get_json()
    validate_against(doc, body, content[mimetype]["schema"])
    return body


def some_task(state: TaskState = TaskState.DONE) -> Task:
    task = Task.create(TaskRequest("hi", "default"), worker="host:1", now=1.0)
    if state is TaskState.QUEUED:
        return task
    if state is TaskState.FAILED:
        return task.transition(TaskState.FAILED, now=2.0, error=TaskError("engine_error", "x"))
    running = task.transition(TaskState.RUNNING, now=2.0)
    return running if state is TaskState.RUNNING else running.transition(TaskState.DONE, now=3.0)


# -- the document itself ---------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1.")
    OpenAPIV31SpecValidator(doc).validate()


def test_a_broken_document_is_refused_by_the_validator(doc: dict[str, Any]) -> None:
    # The validator can fail: a response without its required description is not OpenAPI.
    broken = json.loads(json.dumps(doc))
    del broken["paths"]["/healthz"]["get"]["responses"]["200"]["description"]
    with pytest.raises(Exception, match="description"):
        OpenAPIV31SpecValidator(broken).validate()


def documented_routes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, method, _ in operations(doc)}


def served_routes(app: Flask) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            routes.add((path, method))
    return routes


def test_the_document_lists_exactly_the_routes_the_app_serves(
    doc: dict[str, Any], app: Flask
) -> None:
    served, documented = served_routes(app), documented_routes(doc)
    assert served - documented == set(), "served but not in web/openapi.json"
    assert documented - served == set(), "in web/openapi.json but not served"


def test_the_route_comparison_sees_a_missing_route(doc: dict[str, Any], app: Flask) -> None:
    # The comparison can fail: drop one route from the document and it is found missing.
    shrunk = json.loads(json.dumps(doc))
    del shrunk["paths"]["/api/monitor/permits"]
    assert served_routes(app) - documented_routes(shrunk) == {("/api/monitor/permits", "GET")}


def test_path_parameters_are_declared_for_every_templated_segment(doc: dict[str, Any]) -> None:
    for path, item in doc["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            params = [resolve(doc, p) for p in item.get("parameters", [])]
            params += [resolve(doc, p) for p in operation.get("parameters", [])]
            assert {p["name"] for p in params if p["in"] == "path"} == names, path


def test_every_response_names_the_worker_and_every_error_is_a_problem(
    doc: dict[str, Any],
) -> None:
    for path, method, operation in operations(doc):
        for status, declared in operation["responses"].items():
            response = resolve(doc, declared)
            where = f"{method.upper()} {path} {status}"
            assert resolve(doc, response["headers"]["X-Worker-Id"])["required"], where
            if int(status) >= 400:
                content = response["content"]
                assert list(content) == ["application/problem+json"], where
                assert content["application/problem+json"]["schema"] == {
                    "$ref": "#/components/schemas/Problem"
                }, where


def test_statuses_with_retry_after_document_it(doc: dict[str, Any]) -> None:
    for path, method, operation in operations(doc):
        for status in ("429", "503", "421"):
            if status in operation["responses"] and path != "/readyz":
                headers = resolve(doc, operation["responses"][status])["headers"]
                assert "Retry-After" in headers, f"{method.upper()} {path} {status}"


def test_links_from_an_accepted_task_lead_to_its_status_stream_and_result(
    doc: dict[str, Any],
) -> None:
    by_id = {op["operationId"]: (path, op) for path, _, op in operations(doc)}
    assert len(by_id) == len(list(operations(doc))), "operationIds are unique"
    for status in ("200", "202"):
        links = doc["paths"]["/api/tts"]["post"]["responses"][status]["links"]
        assert {link["operationId"] for link in links.values()} == {
            "getTaskStatus",
            "streamTask",
            "getTaskResult",
        }
        for link in links.values():
            path, _ = by_id[link["operationId"]]
            assert link["parameters"] == {"task_id": "$response.body#/task_id"}
            assert "{task_id}" in path


# -- the document against the domain's rules --------------------------------------------------


def test_input_rules_are_the_domains(doc: dict[str, Any]) -> None:
    params = doc["components"]["parameters"]
    assert params["TaskId"]["schema"]["pattern"] == TASK_ID_PATTERN.pattern
    assert params["IdempotencyKey"]["schema"]["pattern"] == IDEMPOTENCY_KEY_PATTERN.pattern
    request = schema(doc, "TtsRequest")
    assert set(request["properties"]) == {"text", "voice"}
    assert request["additionalProperties"] is False
    assert request["properties"]["text"]["maxLength"] == MAX_TEXT_CHARS
    assert request["properties"]["voice"]["maxLength"] == MAX_VOICE_CHARS
    limit = schema(doc, "ConcurrencyRequest")["properties"]["limit"]
    assert (limit["minimum"], limit["maximum"]) == (1, admin.MAX_LIMIT)


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ("hi", True),
        (" x ", True),
        ("", False),
        ("   ", False),
        ("\n\t", False),
        ("x" * 5001, False),
    ],
)
def test_the_text_schema_accepts_what_the_domain_accepts(
    doc: dict[str, Any], text: str, accepted: bool
) -> None:
    text_schema = schema(doc, "TtsRequest")["properties"]["text"]
    try:
        TaskRequest.parse({"text": text})
        domain_accepts = True
    except ValueError:
        domain_accepts = False
    try:
        validate_against(doc, text, text_schema)
        schema_accepts = True
    except jsonschema.ValidationError:
        schema_accepts = False
    assert domain_accepts == schema_accepts == accepted


@pytest.mark.parametrize("voice", [None, "low", "", "x" * 64, "x" * 65, 5, ["low"], "\ud800"])
def test_the_voice_schema_accepts_what_the_domain_accepts(doc: dict[str, Any], voice: Any) -> None:
    # Which voices exist is the engine's (a 400 the document names); the shape is the domain's.
    try:
        TaskRequest.parse({"text": "hi", "voice": voice})
        domain_accepts = True
    except ValueError:
        domain_accepts = False
    try:
        validate_against(doc, voice, schema(doc, "TtsRequest")["properties"]["voice"])
        schema_accepts = True
    except jsonschema.ValidationError:
        schema_accepts = False
    if voice == "\ud800":  # no JSON Schema says "no lone surrogate": the domain's 400 alone
        assert (domain_accepts, schema_accepts) == (False, True)
    else:
        assert domain_accepts == schema_accepts


def test_enumerations_are_the_codes(doc: dict[str, Any]) -> None:
    assert schema(doc, "TaskState")["enum"] == [s.value for s in TaskState]
    assert schema(doc, "TaskError")["properties"]["code"]["enum"] == [c.value for c in ErrorCode]
    fallback = schema(doc, "Stats")["properties"]["fallback_policy"]["enum"]
    assert fallback == [p.value for p in FallbackPolicy]


@pytest.mark.parametrize("state", list(TaskState))
def test_the_status_schema_is_what_status_json_builds(
    doc: dict[str, Any], state: TaskState
) -> None:
    body = status_json(some_task(state))
    status_schema = schema(doc, "TaskStatus")
    assert set(status_schema["required"]) == set(status_schema["properties"]) == set(body)
    validate_against(doc, body, status_schema)


def test_the_accepted_schema_is_what_accepted_json_builds(doc: dict[str, Any]) -> None:
    body = accepted_json(some_task(TaskState.QUEUED))
    accepted = schema(doc, "Accepted")
    assert set(accepted["required"]) == set(accepted["properties"]) == set(body)
    validate_against(doc, body, accepted)


def test_a_field_the_code_adds_breaks_the_schema(doc: dict[str, Any]) -> None:
    # The schema check can fail: a status with one more field is refused.
    body = status_json(some_task()) | {"progress": 0.5}
    with pytest.raises(jsonschema.ValidationError, match="progress"):
        validate_against(doc, body, schema(doc, "TaskStatus"))


# -- real answers against the document ---------------------------------------------------------


def test_the_route_serves_the_document_with_the_package_version(
    doc: dict[str, Any], client: FlaskClient
) -> None:
    response = client.get("/openapi.json")
    body = assert_conforms(doc, response, "/openapi.json", "get")
    assert response.headers["X-Worker-Id"]
    assert body["info"]["version"] == taskmon.__version__
    assert body["paths"].keys() == doc["paths"].keys()


def submit(client: FlaskClient, body: Any, **headers: str) -> TestResponse:
    return client.post("/api/tts", json=body, headers=headers)


def test_submission_answers_conform(doc: dict[str, Any], client: FlaskClient) -> None:
    accepted = submit(client, {"text": "hello"}, **{"Idempotency-Key": "k-1"})
    body = assert_conforms(doc, accepted, "/api/tts", "post")
    assert accepted.status_code == 202
    replay = submit(client, {"text": "hello"}, **{"Idempotency-Key": "k-1"})
    assert replay.status_code == 200
    assert assert_conforms(doc, replay, "/api/tts", "post") == body
    conflict = submit(client, {"text": "other"}, **{"Idempotency-Key": "k-1"})
    assert conflict.status_code == 422
    assert_conforms(doc, conflict, "/api/tts", "post")
    for bad in ({"text": ""}, {"text": "x", "extra": 1}, [1], {"text": "x", "voice": "nope"}):
        response = submit(client, bad)
        assert response.status_code == 400
        assert_conforms(doc, response, "/api/tts", "post")
    not_json = client.post("/api/tts", data=b"{", content_type="application/json")
    assert not_json.status_code == 400
    assert_conforms(doc, not_json, "/api/tts", "post")


def test_task_answers_conform(doc: dict[str, Any], app: Flask, client: FlaskClient) -> None:
    rt = app.extensions["taskmon"]
    lease = rt.semaphore.acquire(Holder("test", "hold"), timeout=0)  # the task stays queued
    held = [lease] + [
        rt.semaphore.acquire(Holder("test", f"hold-{n}"), timeout=0)
        for n in range(1, rt.semaphore.limit())
    ]
    task_id = submit(client, {"text": "hello"}).get_json()["task_id"]
    not_ready = client.get(f"/api/task/result/{task_id}")
    assert not_ready.status_code == 409
    assert_conforms(doc, not_ready, "/api/task/result/{task_id}", "get")
    for h in held:
        h.release()

    def done() -> bool:
        status = client.get(f"/api/task/status/{task_id}")
        body = assert_conforms(doc, status, "/api/task/status/{task_id}", "get")
        return bool(body["state"] == "done")

    wait_for(done, message="the task done")
    with client.get(f"/api/task/result/{task_id}") as result:
        assert result.status_code == 200
        assert_conforms(doc, result, "/api/task/result/{task_id}", "get")
    with client.get(f"/api/task/stream/{task_id}") as stream:
        assert stream.status_code == 200
        assert_conforms(doc, stream, "/api/task/stream/{task_id}", "get")
    for template in ("status", "result", "stream"):
        path = f"/api/task/{template}/{{task_id}}"
        for task, code in (("0" * 32, 404), ("NOT-AN-ID", 400)):
            response = client.get(f"/api/task/{template}/{task}")
            assert response.status_code == code
            assert_conforms(doc, response, path, "get")


def test_monitor_and_operational_answers_conform(
    doc: dict[str, Any], app: Flask, client: FlaskClient
) -> None:
    rt = app.extensions["taskmon"]
    lease = rt.semaphore.acquire(Holder("test", "a" * 32), timeout=0)
    try:
        permits = assert_conforms(doc, client.get("/api/monitor/permits"), "/api/monitor/permits",
                                  "get")  # fmt: skip
        assert len(permits["holders"]) == 1
        assert set(permits) == set(schema(doc, "Permits")["required"])
        holder = schema(doc, "PermitHolder")
        assert set(permits["holders"][0]) == set(holder["required"]) == set(holder["properties"])
    finally:
        lease.release()
    stats = assert_conforms(doc, client.get("/api/monitor/stats"), "/api/monitor/stats", "get")
    stats_schema = schema(doc, "Stats")
    assert set(stats) == set(stats_schema["required"])
    # The one optional field: present when a Redis URL is configured (not in memory mode).
    assert set(stats_schema["properties"]) - set(stats) == {"fallback_policy"}
    ready = assert_conforms(doc, client.get("/readyz"), "/readyz", "get")
    assert set(ready) == set(schema(doc, "Ready")["required"])
    assert_conforms(doc, client.get("/healthz"), "/healthz", "get")
    assert_conforms(doc, client.get("/metrics"), "/metrics", "get")
    assert_conforms(doc, client.get("/monitor"), "/monitor", "get")


def test_admin_answers_conform(doc: dict[str, Any], client: FlaskClient) -> None:
    path, auth = "/api/admin/concurrency", {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    changed = client.put(path, json={"limit": 3}, headers=auth)
    body = assert_conforms(doc, changed, path, "put")
    assert set(body) == set(schema(doc, "Concurrency")["required"])
    assert body["limit"] == 3
    refused = client.put(path, json={"limit": 3})
    assert refused.status_code == 401
    assert_conforms(doc, refused, path, "put")
    invalid = client.put(path, json={"limit": 0}, headers=auth)
    assert invalid.status_code == 400
    assert_conforms(doc, invalid, path, "put")


def test_admin_off_answers_404_as_documented(doc: dict[str, Any], tmp_path: Path) -> None:
    app = create_app(
        {"backend": "memory", "engine": "tone", "result_dir": str(tmp_path / "results")}
    )
    try:
        response = app.test_client().put("/api/admin/concurrency", json={"limit": 2})
        assert response.status_code == 404
        assert_conforms(doc, response, "/api/admin/concurrency", "put")
    finally:
        app.extensions["taskmon"].close()
