"""The shipped ACL user (deploy/redis/taskmon.acl) on a real redis-server that loads it:
taskmon's whole API runs as it with nothing refused; it can do nothing beyond taskmon's keys
and channels; and a command missing from it is caught, by the checker and at start-up."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from taskmon.app import create_app
from taskmon.harness.redis_server import RedisServer
from taskmon.ports import BackendUnavailable
from taskmon.web.context import runtime_of
from tests.support.acl import USER, acl_line, acl_refusals, describe
from tests.support.timing import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("clean_taskmon_env")]

ADMIN_PASSWORD = "admin-pw-4t7"
PASSWORD = "taskmon-pw-9q2"
TOKEN = "admin-token-x1-acl-it"
MakeApp = Callable[..., Flask]


def acl_redis(tmp_path: Path, *, without: tuple[str, ...] = ()) -> RedisServer:
    return RedisServer(
        workdir=tmp_path / "redis",
        password=ADMIN_PASSWORD,
        acl_users=[acl_line(PASSWORD, without=without)],
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with acl_redis(tmp_path) as started:
        yield started


@pytest.fixture
def admin(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=5)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def as_taskmon(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(
        server.url_for(USER, PASSWORD), decode_responses=True, socket_timeout=5
    )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[MakeApp]:
    made: list[Flask] = []

    def factory(url: str, **overrides: Any) -> Flask:
        app = create_app({
            "backend": "redis", "redis_url": url, "engine": "tone", "tone_ms_per_char": 0,
            "result_dir": tmp_path / "results", "admin_token": TOKEN, "sse_keepalive_s": 1,
            "concurrency_limit": 1, **overrides,
        })  # fmt: skip
        made.append(app)
        return app

    yield factory
    for app in made:
        runtime_of(app).close(wait=True)


def lifecycle(client: FlaskClient) -> dict[str, Any]:
    """Every endpoint that reaches Redis, as one user would drive them: three tasks for a
    limit of one (so two wait and are handed their permit), a stream, stats, permits, a
    live limit change; the last status read."""
    ids = []
    for n in range(3):
        accepted = client.post("/api/tts", json={"text": f"acl {n}"})
        assert accepted.status_code == 202, accepted.json
        ids.append(accepted.json["task_id"])  # type: ignore[index]
    replay = client.post("/api/tts", json={"text": "acl 0"}, headers={"Idempotency-Key": "k1"})
    again = client.post("/api/tts", json={"text": "acl 0"}, headers={"Idempotency-Key": "k1"})
    assert (replay.status_code, again.status_code) == (202, 200)
    stream = client.get(f"/api/task/stream/{ids[0]}")
    assert b'"state":"done"' in stream.data

    def done(task_id: str) -> bool:
        status = client.get(f"/api/task/status/{task_id}").json
        return status is not None and status["state"] == "done"

    for task_id in ids:
        wait_for(lambda t=task_id: done(t))  # type: ignore[misc]
    result = client.get(f"/api/task/result/{ids[0]}")
    result.close()
    assert result.status_code == 200
    stats: dict[str, Any] = client.get("/api/monitor/stats").json or {}
    assert stats["counts"]["done"] >= 4
    assert client.get("/api/monitor/permits").status_code == 200
    limit = client.put(
        "/api/admin/concurrency", json={"limit": 2}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert limit.status_code == 200, limit.json
    assert client.get("/readyz").status_code == 200
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/api/monitor/recent", "/api/monitor/workers", "/metrics"):
        assert client.get(path).status_code == 200, path
    for path in ("/api/admin/permits", "/api/admin/workers"):
        assert client.get(path, headers=auth).status_code == 200, path
    listed = client.get("/api/monitor/workers").json or {}
    target = listed["workers"][0]["worker"]
    for method in (client.post, client.delete):
        order = method(f"/api/admin/workers/{target}/drain", headers=auth)
        assert order.status_code == 202, order.json
    assert client.delete("/api/admin/permits/unheld", headers=auth).status_code == 404
    return stats


def test_the_whole_api_runs_as_the_acl_user_with_nothing_refused(
    server: RedisServer, admin: redis.Redis, make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    # Database 1: the URL's database is selected on every connection (+select).
    url = server.url_for(USER, PASSWORD).replace("/0", "/1")
    with caplog.at_level(logging.INFO, logger="taskmon"):
        client = make_app(url).test_client()
        stats = lifecycle(client)
    assert stats["backend"] == "redis"
    assert stats["degraded"] is False
    assert acl_refusals(admin) == [], describe(acl_refusals(admin))
    skipped = [r.getMessage() for r in caplog.records if "maxmemory-policy not checked" in
               r.getMessage()]  # fmt: skip
    assert len(skipped) == 1, skipped
    assert "this user may not run CONFIG GET" in skipped[0]
    assert ":***@" in skipped[0]
    # The admin audit lines and the drain it ordered warn by design; nothing else may.
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    warned = [r for r in warned if r.name not in {"taskmon.web.admin", "taskmon.service.drain"}]
    assert not warned, [r.getMessage() for r in warned]
    assert admin.dbsize() == 0, "nothing written to database 0"
    database_1 = redis.Redis.from_url(server.url.replace("/0", "/1"))
    try:
        assert database_1.dbsize() > 0
    finally:
        database_1.close()


def test_the_checker_catches_a_command_missing_from_the_acl(
    tmp_path: Path, make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    # HINCRBY keeps the counters, inside the scripts that start and end a task.
    with acl_redis(tmp_path, without=("hincrby",)) as server, caplog.at_level(logging.ERROR):
        admin = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=5)
        try:
            client = make_app(server.url_for(USER, PASSWORD)).test_client()
            answers = [client.post("/api/tts", json={"text": f"refused {n}"}) for n in range(3)]
            refusals = describe(acl_refusals(admin))
        finally:
            admin.close()
    # A 503 that names the cause, not a 500 with a traceback.
    assert {answer.status_code for answer in answers} == {503}
    assert {answer.json["type"].rsplit(":", 1)[-1] for answer in answers} == {"backend-refused"}  # type: ignore[index]
    assert any("hincrby" in refusal for refusal in refusals), refusals
    said = [r.getMessage() for r in caplog.records if "Redis refused a command" in r.getMessage()]
    assert len(said) == 1, said  # once, however many calls meet it
    assert "while starting task" in said[0]
    assert "redis.call('HINCRBY'" in said[0]  # the script's own line, named
    assert "deploy/redis/taskmon.acl" in said[0]


def test_a_channel_outside_the_acl_is_named_in_one_error(
    tmp_path: Path, make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    line = acl_line(PASSWORD).replace("&{taskmon}:*", "&{elsewhere}:*")
    with (
        RedisServer(workdir=tmp_path / "redis", password=ADMIN_PASSWORD, acl_users=[line]) as srv,
        caplog.at_level(logging.ERROR),
    ):
        client = make_app(srv.url_for(USER, PASSWORD)).test_client()
        answers = [client.post("/api/tts", json={"text": f"unheard {n}"}) for n in range(2)]
    # A 503 that names the cause, not a 500 with a traceback.
    assert {answer.status_code for answer in answers} == {503}
    assert {answer.json["type"].rsplit(":", 1)[-1] for answer in answers} == {"backend-refused"}  # type: ignore[index]
    said = [r.getMessage() for r in caplog.records if "Redis refused a command" in r.getMessage()]
    # One line per refusal, however many calls meet it: the script's PUBLISH, the SUBSCRIBE.
    publish = [m for m in said if "can't publish to the channel" in m]
    assert len(publish) == 1, said
    assert "redis.call('PUBLISH'" in publish[0]  # the script's own line, named
    assert len(said) <= 2, said
    assert all("publish" in m or "while subscribing to task events" in m for m in said), said


def test_a_start_refused_a_command_names_the_acl_file(tmp_path: Path, make_app: MakeApp) -> None:
    with acl_redis(tmp_path, without=("evalsha",)) as server:
        url = server.url_for(USER, PASSWORD)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as refused:
            make_app(url)
        took = time.monotonic() - started
    message = str(refused.value)
    assert message.startswith(f"TASKMON_BACKEND=redis but Redis at redis://{USER}:***@")
    assert "refused a command, key or channel to the user of TASKMON_REDIS_URL" in message
    assert "evalsha" in message
    assert "deploy/redis/taskmon.acl" in message
    assert "~{taskmon}:* and &{taskmon}:*" in message
    assert PASSWORD not in message
    assert took < 5


def test_a_start_as_an_unknown_user_says_the_credentials_were_refused(
    server: RedisServer, make_app: MakeApp
) -> None:
    with pytest.raises(BackendUnavailable) as refused:
        make_app(server.url_for(USER, "not-the-password"))
    assert "refused the user and password of TASKMON_REDIS_URL" in str(refused.value)
    assert "not-the-password" not in str(refused.value)
    with pytest.raises(BackendUnavailable) as anonymous:
        make_app(server.url_for())
    assert "requires a password" in str(anonymous.value)


def test_auto_mode_with_a_refused_command_runs_degraded_with_one_warning(
    tmp_path: Path, make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    with acl_redis(tmp_path, without=("evalsha",)) as server, caplog.at_level(logging.WARNING):
        app = make_app(server.url_for(USER, PASSWORD), backend="auto")
        stats = app.test_client().get("/api/monitor/stats").json
    assert stats is not None
    assert (stats["backend"], stats["degraded"]) == ("memory", True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "refused a command" in warnings[0]
    assert "running on the in-memory backend" in warnings[0]


@pytest.mark.parametrize(
    "command",
    [
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("KEYS", "*"),
        ("CONFIG", "GET", "*"),
        ("INFO",),
        ("ACL", "LIST"),
        ("SCRIPT", "FLUSH"),
        ("EVAL", "return 1", "0"),
        ("GET", "other:secret"),
        ("SET", "other:secret", "x"),
        ("DEL", "other:secret"),
        ("HGETALL", "taskmon:no-hash-tag"),
        ("PUBLISH", "other-channel", "x"),
        ("SHUTDOWN",),
    ],
    ids=lambda command: "-".join(command[:2]),
)
def test_the_acl_user_cannot_step_outside(
    as_taskmon: redis.Redis, admin: redis.Redis, command: tuple[str, ...]
) -> None:
    admin.set("other:secret", "kept")
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_taskmon.execute_command(*command)  # type: ignore[no-untyped-call]
    assert admin.get("other:secret") == "kept"
    assert as_taskmon.set("{taskmon}:probe", "1") is True, "its own keys it may write"


def test_a_script_it_loads_cannot_widen_its_rights(
    as_taskmon: redis.Redis, admin: redis.Redis
) -> None:
    admin.set("other:secret", "kept")
    read = as_taskmon.script_load("return redis.call('GET', KEYS[1])")
    flush = as_taskmon.script_load("return redis.call('FLUSHALL')")
    with pytest.raises(redis.exceptions.NoPermissionError):
        as_taskmon.evalsha(read, 1, "other:secret")  # a key outside, declared
    with pytest.raises(redis.ResponseError, match=r"can't run this command"):
        as_taskmon.evalsha(flush, 0)
    sneaky = as_taskmon.script_load("return redis.call('GET', 'other:secret')")
    with pytest.raises(redis.ResponseError, match=r"can.t access at least one of the keys"):
        as_taskmon.evalsha(sneaky, 1, "{taskmon}:probe")  # undeclared, inside
    assert admin.get("other:secret") == "kept"


def test_the_acl_user_cannot_listen_outside_its_channels(as_taskmon: redis.Redis) -> None:
    pubsub = as_taskmon.pubsub()  # type: ignore[no-untyped-call, unused-ignore]
    try:
        pubsub.subscribe("other-channel")
        with pytest.raises(redis.exceptions.NoPermissionError):
            pubsub.get_message(timeout=2)
        pubsub.subscribe("{taskmon}:events:x")
        confirmed = pubsub.get_message(timeout=2)
        assert confirmed is not None
        assert confirmed["type"] == "subscribe"
    finally:
        pubsub.close()


def test_a_key_prefix_the_acl_does_not_cover_refuses_the_start(
    server: RedisServer, make_app: MakeApp
) -> None:
    message = refused_start(make_app, server.url_for(USER, PASSWORD), key_prefix="tts-eu")
    assert "refused a command, key or channel to the user of TASKMON_REDIS_URL" in message
    assert "no permissions to access one of the keys" in message
    assert "~{tts-eu}:* and &{tts-eu}:* for TASKMON_KEY_PREFIX=tts-eu" in message


def test_the_acl_for_another_prefix_serves_that_prefix(tmp_path: Path, make_app: MakeApp) -> None:
    line = acl_line(PASSWORD, prefix="tts-eu")
    with RedisServer(workdir=tmp_path / "redis", password=ADMIN_PASSWORD, acl_users=[line]) as srv:
        client = make_app(srv.url_for(USER, PASSWORD), key_prefix="tts-eu").test_client()
        stats = lifecycle(client)
        admin = redis.Redis.from_url(srv.url, decode_responses=True, socket_timeout=5)
        try:
            refusals = acl_refusals(admin)
        finally:
            admin.close()
    assert stats["backend"] == "redis"
    assert refusals == [], describe(refusals)


def refused_start(make_app: MakeApp, url: str, **overrides: Any) -> str:
    with pytest.raises(BackendUnavailable) as refused:
        make_app(url, **overrides)
    return str(refused.value)


def test_without_scan_metrics_leave_out_only_the_key_counts(
    tmp_path: Path, make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    # SCAN lists key names beyond the prefix: an operator may leave it out of the ACL.
    with acl_redis(tmp_path, without=("scan",)) as server, caplog.at_level(logging.ERROR):
        client = make_app(server.url_for(USER, PASSWORD)).test_client()
        assert client.post("/api/tts", json={"text": "counted"}).status_code == 202
        pages = [client.get("/metrics") for _ in range(3)]
    assert {page.status_code for page in pages} == {200}
    text = pages[-1].get_data(as_text=True)
    assert "taskmon_redis_up 1.0" in text
    assert "taskmon_global_tasks{" in text
    assert "taskmon_global_namespace_keys " not in text
    said = [r.getMessage() for r in caplog.records if "Redis refused a command" in r.getMessage()]
    assert len(said) == 1, said  # once, however many scrapes meet it
    assert "scan" in said[0].lower()
