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
    EXCERPT_CHARS,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_TEXT_CHARS,
    MAX_VOICE_CHARS,
    RECENT_MAX,
    TASK_ID_PATTERN,
    ErrorCode,
    Task,
    TaskError,
    TaskRequest,
    TaskState,
    TaskSummary,
)
from taskmon.ports import Holder, Lease
from taskmon.runtime import Runtime, worker_identity
from taskmon.web import admin, api
from taskmon.web.openapi import document
from taskmon.web.status import accepted_json, status_json, summary_json
from taskmon.worker_state import WorkerState
from tests.support.timing import wait_for

pytestmark = pytest.mark.usefixtures("clean_taskmon_env")

DOC_URI = "urn:taskmon:openapi"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
ADMIN_TOKEN = "s3cret-token-openapi"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


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


def rt_of(app: Flask) -> Runtime:
    found: Runtime = app.extensions["taskmon"]
    return found


def hold_every_permit(rt: Runtime) -> list[Lease]:
    """Every permit of the cap, so a task submitted now waits for one (queued)."""
    return [
        rt.semaphore.acquire(Holder("test:1", f"hold-{n}"), timeout=0)
        for n in range(rt.semaphore.limit())
    ]


def fields(doc: dict[str, Any], name: str) -> tuple[set[str], set[str]]:
    """A schema's required fields and its properties."""
    found = schema(doc, name)
    return set(found["required"]), set(found["properties"])


def wait_done(client: FlaskClient, task_id: str) -> None:
    wait_for(
        lambda: client.get(f"/api/task/status/{task_id}").get_json()["state"] == "done",
        message=f"task {task_id} done",
    )


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


def test_the_new_inputs_and_fields_follow_the_code(doc: dict[str, Any]) -> None:
    params = doc["components"]["parameters"]
    limit = params["RecentLimit"]["schema"]
    assert (limit["minimum"], limit["maximum"]) == (1, RECENT_MAX)
    assert limit["default"] == api.RECENT_DEFAULT
    assert schema(doc, "RecentTasks")["properties"]["limit"]["maximum"] == RECENT_MAX
    for name in ("PermitToken", "WorkerIdPath"):
        # Longer ids name nothing (404), and a `/` is no longer the route's one segment.
        assert params[name]["schema"]["maxLength"] == admin._MAX_ID_LENGTH
        assert params[name]["schema"]["pattern"].startswith("^[^/]+")
    validate_against(doc, worker_identity(), params["WorkerIdPath"]["schema"])
    validate_against(doc, worker_identity(), doc["components"]["headers"]["XWorkerId"]["schema"])
    excerpt = schema(doc, "TaskSummary")["properties"]["text_excerpt"]
    assert excerpt["maxLength"] == EXCERPT_CHARS
    # The workers' fields in WorkerState's own order (to_json documents it that way).
    entry = WorkerState("host:1", "memory", False, 0, 0, False).to_json()
    assert list(schema(doc, "WorkerState")["properties"]) == list(entry)
    assert list(schema(doc, "AdminWorkerState")["properties"]) == [
        *entry,
        "alive",
        "drain_ordered_s_ago",
    ]


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


@pytest.mark.parametrize("state", list(TaskState))
def test_the_summary_schema_is_what_summary_json_builds(
    doc: dict[str, Any], state: TaskState
) -> None:
    body = summary_json(TaskSummary.of(some_task(state)), now=5.0)
    assert fields(doc, "TaskSummary") == (set(body), set(body))
    validate_against(doc, body, schema(doc, "TaskSummary"))
    if state is TaskState.QUEUED:  # still waiting (until now), and never run
        assert (body["queued_s"], body["run_s"]) == (4.0, None)
    else:  # it left the queue when it started, or failed there
        assert body["queued_s"] == 1.0


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
    favicon = client.get("/favicon.ico")
    assert favicon.status_code == 204
    assert_conforms(doc, favicon, "/favicon.ico", "get")


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
    too_large = client.put(path, json={"limit": 3, "pad": "x" * 70_000}, headers=auth)
    assert too_large.status_code == 413
    assert_conforms(doc, too_large, path, "put")


def test_recent_answers_conform(doc: dict[str, Any], app: Flask, client: FlaskClient) -> None:
    path = "/api/monitor/recent"
    done = [submit(client, {"text": f"hello {n}"}).get_json()["task_id"] for n in range(2)]
    for task_id in done:
        wait_done(client, task_id)
    held = hold_every_permit(rt_of(app))
    try:
        queued = submit(client, {"text": "waits   for\na permit"}).get_json()["task_id"]
        body = assert_conforms(doc, client.get(path), path, "get")
        required, properties = fields(doc, "RecentTasks")
        assert set(body) == required == properties
        assert body["limit"] == api.RECENT_DEFAULT
        assert {t["task_id"] for t in body["tasks"]} == {queued, *done}
        assert body["oldest_queued"]["task_id"] == queued
        listed = {t["task_id"]: t for t in body["tasks"]}
        assert listed[queued]["text_excerpt"] == "waits for a permit"
        for task in (*body["tasks"], body["oldest_queued"]):
            assert set(task) == fields(doc, "TaskSummary")[0]
        one = assert_conforms(doc, client.get(path, query_string={"limit": "1"}), path, "get")
        assert (one["limit"], len(one["tasks"])) == (1, 1)
    finally:
        for lease in held:
            lease.release()
    wait_done(client, queued)
    after = assert_conforms(doc, client.get(path), path, "get")
    assert after["oldest_queued"] is None, "null once nothing is queued"
    assert all(t["state"] == "done" and t["result_url"] for t in after["tasks"])
    for bad in ("0", str(RECENT_MAX + 1), "abc", "-1", "1.5", "\u00b2", ""):
        refused = client.get(path, query_string={"limit": bad})
        assert refused.status_code == 400, bad
        problem = assert_conforms(doc, refused, path, "get")
        assert (problem["type"], problem["field"]) == ("urn:taskmon:problem:invalid-input", "limit")


def test_workers_answers_conform(doc: dict[str, Any], app: Flask, client: FlaskClient) -> None:
    me = rt_of(app).worker_id
    for path, headers, listing, entry in (
        ("/api/monitor/workers", {}, "Workers", "WorkerState"),
        ("/api/admin/workers", AUTH, "AdminWorkers", "AdminWorkerState"),
    ):
        body = assert_conforms(doc, client.get(path, headers=headers), path, "get")
        assert set(body) == fields(doc, listing)[0] == fields(doc, listing)[1], path
        [worker] = body["workers"]  # memory mode: the answering worker alone
        assert worker["worker"] == body["worker"] == me
        assert set(worker) == fields(doc, entry)[0] == fields(doc, entry)[1], path
    refused = client.get("/api/admin/workers", headers={"Authorization": "Bearer wrong"})
    assert refused.status_code == 401
    assert_conforms(doc, refused, "/api/admin/workers", "get")


def test_admin_permit_answers_conform(doc: dict[str, Any], app: Flask, client: FlaskClient) -> None:
    rt = rt_of(app)
    held = hold_every_permit(rt)
    try:
        task_id = submit(client, {"text": "waits"}).get_json()["task_id"]
        wait_for(rt.semaphore.waiters, message="the task waiting for a permit")
        path = "/api/admin/permits"
        listed = assert_conforms(doc, client.get(path, headers=AUTH), path, "get")
        assert set(listed) == fields(doc, "AdminPermits")[0] == fields(doc, "AdminPermits")[1]
        assert len(listed["holders"]) == listed["in_use"] == len(held)
        holder_fields = fields(doc, "PermitHolderWithToken")
        assert set(listed["holders"][0]) == holder_fields[0] == holder_fields[1]
        [waiter] = listed["waiters"]
        assert (waiter["task_id"], waiter["position"]) == (task_id, 1)
        assert set(waiter) == fields(doc, "PermitWaiter")[0] == fields(doc, "PermitWaiter")[1]
        unauthorized = client.get(path)
        assert unauthorized.status_code == 401
        assert_conforms(doc, unauthorized, path, "get")

        release, token = "/api/admin/permits/{token}", listed["holders"][0]["token"]
        answer = client.delete(f"/api/admin/permits/{token}", headers=AUTH)
        assert answer.status_code == 200
        released = assert_conforms(doc, answer, release, "delete")
        assert set(released) == fields(doc, "PermitReleased")[0] == fields(doc, "PermitReleased")[1]
        assert released["released"]["token"] == token
        for gone in (token, "x" * (admin._MAX_ID_LENGTH + 1)):
            missing = client.delete(f"/api/admin/permits/{gone}", headers=AUTH)
            assert missing.status_code == 404
            problem = assert_conforms(doc, missing, release, "delete")
            assert problem["type"] == "urn:taskmon:problem:permit-not-found"
        unauthorized = client.delete(f"/api/admin/permits/{token}")
        assert unauthorized.status_code == 401
        assert_conforms(doc, unauthorized, release, "delete")
        # The waiting task got the released permit.
        wait_done(client, task_id)
    finally:
        for lease in held:
            lease.release()  # the revoked one: a no-op


def test_drain_answers_conform(doc: dict[str, Any], app: Flask, client: FlaskClient) -> None:
    me, path = rt_of(app).worker_id, "/api/admin/workers/{worker_id}/drain"
    ordered = client.post(f"/api/admin/workers/{me}/drain", headers=AUTH)
    assert ordered.status_code == 202
    body = assert_conforms(doc, ordered, path, "post")
    assert set(body) == fields(doc, "DrainOrdered")[0] == fields(doc, "DrainOrdered")[1]
    order = schema(doc, "DrainOrdered")["properties"]["order"]
    assert set(body["order"]) == set(order["required"]) == set(order["properties"])
    assert body["order"] == {"worker": me, "drain": True, "applies_within_s": 0.0}
    try:
        refused = submit(client, {"text": "hi"})
        assert refused.status_code == 503
        problem = assert_conforms(doc, refused, "/api/tts", "post")
        assert (problem["type"], problem["worker"]) == ("urn:taskmon:problem:draining", me)
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503
        problem = assert_conforms(doc, not_ready, "/readyz", "get")
        assert (problem["type"], problem["draining"]) == ("urn:taskmon:problem:draining", True)
        workers = assert_conforms(doc, client.get("/api/monitor/workers"),
                                  "/api/monitor/workers", "get")  # fmt: skip
        assert workers["workers"][0]["draining"] is True
    finally:
        cancelled = client.delete(f"/api/admin/workers/{me}/drain", headers=AUTH)
    assert cancelled.status_code == 202
    assert assert_conforms(doc, cancelled, path, "delete")["order"]["drain"] is False
    assert submit(client, {"text": "hi"}).status_code == 202
    for method in ("post", "delete"):
        unknown = client.open("/api/admin/workers/nohost:1/drain", method=method, headers=AUTH)
        assert unknown.status_code == 404
        problem = assert_conforms(doc, unknown, path, method)
        assert (problem["type"], problem["worker_id"]) == (
            "urn:taskmon:problem:worker-not-found", "nohost:1"
        )  # fmt: skip
        unauthorized = client.open(f"/api/admin/workers/{me}/drain", method=method)
        assert unauthorized.status_code == 401
        assert_conforms(doc, unauthorized, path, method)
    assert not rt_of(app).service.draining


def test_admin_off_answers_404_as_documented(doc: dict[str, Any], tmp_path: Path) -> None:
    app = create_app(
        {"backend": "memory", "engine": "tone", "result_dir": str(tmp_path / "results")}
    )
    try:
        client = app.test_client()
        admin_operations = [(p, m) for p, m, _ in operations(doc) if p.startswith("/api/admin/")]
        assert len(admin_operations) == 6
        for path, method in admin_operations:
            url = path.replace("{token}", "0" * 32).replace("{worker_id}", "nohost:1")
            body = {"limit": 2} if method == "put" else None
            # Even with a bearer: without TASKMON_ADMIN_TOKEN the routes do not exist.
            response = client.open(url, method=method.upper(), json=body, headers=AUTH)
            assert response.status_code == 404, f"{method} {url}"
            assert assert_conforms(doc, response, path, method)["type"] == "about:blank"
    finally:
        app.extensions["taskmon"].close()
