"""taskmon over TLS to a real redis-server that serves TLS only (`--port 0 --tls-port P`):
every client it opens (command pool, subscriber, probe, start-up check) keeps the URL's TLS
options, with or without a client certificate; and each way TLS can be wrong fails the start
at once with a message naming the setting to change, never a hang."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from taskmon.app import create_app
from taskmon.config import ConfigError, load_settings
from taskmon.harness.processes import free_port
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.redis_tls import RedisTls, TlsFiles
from taskmon.ports import BackendUnavailable
from taskmon.web.context import runtime_of
from tests.support.timing import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("clean_taskmon_env")]

MakeApp = Callable[..., Flask]
# A refused start takes one call budget at most (0.8 s with the defaults), plus the build.
REFUSED_WITHIN_S = 3.0


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return TlsFiles.generate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def stranger_ca(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """Another CA: its certificates are not the server's, and the server trusts none of them."""
    return TlsFiles.generate(tmp_path_factory.mktemp("stranger"), name="stranger")


@pytest.fixture(scope="module")
def tls_redis(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> Iterator[RedisServer]:
    with RedisServer(
        workdir=tmp_path_factory.mktemp("redis-tls"), tls=RedisTls(tls_files, "optional")
    ) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_redis(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> Iterator[RedisServer]:
    """Demands a client certificate signed by the test CA (tls-auth-clients yes)."""
    with RedisServer(
        workdir=tmp_path_factory.mktemp("redis-mtls"), tls=RedisTls(tls_files, "yes")
    ) as server:
        yield server


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[MakeApp]:
    made: list[Flask] = []

    def factory(url: str, **overrides: Any) -> Flask:
        app = create_app({
            "backend": "redis", "redis_url": url, "engine": "tone", "tone_ms_per_char": 1,
            "result_dir": tmp_path / "results", "sse_keepalive_s": 1, **overrides,
        })  # fmt: skip
        made.append(app)
        return app

    yield factory
    for app in made:
        runtime_of(app).close(wait=True)


def client_names(server: RedisServer) -> list[str]:
    admin = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=5)
    try:
        return [str(c.get("name", "")) for c in admin.client_list()]
    finally:
        admin.close()


def run_a_task(app: Flask) -> bytes:
    """A task through to `done`, and its stream (which needs the subscriber's connection)."""
    client = app.test_client()
    accepted = client.post("/api/tts", json={"text": "over TLS"})
    assert accepted.status_code == 202, accepted.json
    task_id = accepted.json["task_id"]  # type: ignore[index]
    stream = client.get(f"/api/task/stream/{task_id}")
    stats = client.get("/api/monitor/stats").json
    assert stats is not None
    assert (stats["backend"], stats["degraded"]) == ("redis", False)
    return bytes(stream.data)


@pytest.mark.parametrize("client_cert", [False, True], ids=["server-cert-only", "client-cert"])
def test_every_connection_runs_over_tls(
    tls_redis: RedisServer, make_app: MakeApp, client_cert: bool
) -> None:
    url = tls_redis.url_for(client_cert=client_cert)
    assert url.startswith("rediss://")
    app = make_app(url)
    assert b'"state":"done"' in run_a_task(app)
    rt = runtime_of(app)
    assert rt.backend_target == url, "the target shows the TLS options (no secret in them)"
    # The server has no plain-text port: whatever taskmon opened, it opened over TLS.
    names = client_names(tls_redis)
    assert f"taskmon:{rt.worker_id}" in names
    assert f"taskmon-sub:{rt.worker_id}" in names


def test_a_demanded_client_certificate_is_given(mtls_redis: RedisServer, make_app: MakeApp) -> None:
    assert b'"state":"done"' in run_a_task(make_app(mtls_redis.url_for(client_cert=True)))


def test_the_failover_probe_and_re_promotion_keep_tls(
    tmp_path: Path, tls_files: TlsFiles, make_app: MakeApp
) -> None:
    with RedisServer(workdir=tmp_path / "redis", tls=RedisTls(tls_files, "yes")) as server:
        app = make_app(server.url_for())
        rt = runtime_of(app)
        server.stop_for_now()
        client = app.test_client()
        during = client.post("/api/tts", json={"text": "while Redis is away"})
        assert during.status_code == 202
        assert rt.degraded
        server.start()
        wait_for(lambda: not rt.degraded, message="re-promoted over TLS")
        assert b'"state":"done"' in run_a_task(app)


def refused(make_app: MakeApp, url: str) -> str:
    """The start-up refusal's message for `url`, checked to come within REFUSED_WITHIN_S."""
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as failure:
        make_app(url)
    took = time.monotonic() - started
    assert took < REFUSED_WITHIN_S, f"a refusal, not a hang: {took:.1f} s"
    return str(failure.value)


def test_a_missing_client_certificate_says_to_add_one(
    mtls_redis: RedisServer, make_app: MakeApp
) -> None:
    message = refused(make_app, mtls_redis.url_for(client_cert=False))
    assert message.startswith("TASKMON_BACKEND=redis but Redis at rediss://127.0.0.1:")
    assert "closed the TLS connection during the handshake" in message
    assert "demands a client certificate (tls-auth-clients yes)" in message
    assert "ssl_certfile=CLIENT.crt&ssl_keyfile=CLIENT.key" in message


def test_a_client_certificate_of_another_ca_is_named(
    mtls_redis: RedisServer, stranger_ca: TlsFiles, make_app: MakeApp
) -> None:
    url = mtls_redis.url_for(client_cert=False)
    url += f"&ssl_certfile={stranger_ca.client_cert}&ssl_keyfile={stranger_ca.client_key}"
    message = refused(make_app, url)
    assert "it refused the client certificate" in message
    assert "tls-ca-cert-file" in message


def test_a_wrong_ca_says_which_option_to_fix(
    tls_redis: RedisServer, stranger_ca: TlsFiles, make_app: MakeApp
) -> None:
    message = refused(make_app, tls_redis.url_for(ca_cert=stranger_ca.ca_cert))
    assert "the TLS certificate of Redis at rediss://" in message
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert "set ssl_ca_certs in TASKMON_REDIS_URL to the CA certificate" in message


def test_no_ca_at_all_is_a_wrong_ca_too(tls_redis: RedisServer, make_app: MakeApp) -> None:
    url = f"rediss://127.0.0.1:{tls_redis.port}/0"  # the system's CAs: none signed it
    assert "set ssl_ca_certs in TASKMON_REDIS_URL" in refused(make_app, url)


def test_plain_text_to_a_tls_port_says_use_rediss(
    tls_redis: RedisServer, make_app: MakeApp
) -> None:
    message = refused(make_app, f"redis://127.0.0.1:{tls_redis.port}/0")
    assert "if that port serves TLS only, use rediss://" in message


def test_tls_to_a_plain_text_port_says_use_redis(
    redis_server: RedisServer, tls_files: TlsFiles, make_app: MakeApp
) -> None:
    host_port = redis_server.url.split("@")[-1].removeprefix("redis://").split("/")[0]
    message = refused(make_app, f"rediss://{host_port}/0?{tls_files.url_query()}")
    assert "does not answer" in message
    assert "if that port serves plain text, not TLS, use redis://" in message


def test_auto_mode_without_the_client_certificate_runs_degraded_and_says_why(
    mtls_redis: RedisServer, make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="taskmon"):
        app = make_app(mtls_redis.url_for(client_cert=False), backend="auto")
    stats = app.test_client().get("/api/monitor/stats").json
    assert stats is not None
    assert (stats["backend"], stats["degraded"]) == ("memory", True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "demands a client certificate" in warnings[0]
    assert "running on the in-memory backend" in warnings[0]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("ssl_ca_certs=/nowhere/ca.crt", "ssl_ca_certs=/nowhere/ca.crt is not a file"),
        ("ssl_certfile=/nowhere/c.crt", "ssl_certfile=/nowhere/c.crt is not a file"),
        ("ssl_keyfile=/nowhere/c.key", "ssl_keyfile=/nowhere/c.key is not a file"),
    ],
)
def test_a_tls_file_that_cannot_be_read_stops_the_start(query: str, says: str) -> None:
    with pytest.raises(ConfigError) as failure:
        load_settings({"redis_url": f"rediss://:pw@127.0.0.1:{free_port()}/0?{query}"})
    assert "TASKMON_REDIS_URL=<hidden>" in str(failure.value)
    assert says in str(failure.value)
    assert ":pw@" not in str(failure.value)


def test_tls_options_on_a_plain_url_stop_the_start(tls_files: TlsFiles) -> None:
    with pytest.raises(ConfigError, match=r"ssl_ca_certs need a rediss:// URL"):
        load_settings({"redis_url": f"redis://127.0.0.1:6379/0?ssl_ca_certs={tls_files.ca_cert}"})
