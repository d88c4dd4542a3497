"""`gunicorn -w 4` over TLS to a real redis-server that serves TLS only and demands a client
certificate (`--port 0 --tls-port P --tls-auth-clients yes`): the whole task lifecycle (tasks
beyond the limit, streams and status on other workers, admin), Redis restarted under it and
re-promoted over TLS; and, without the client certificate or with a wrong CA, a start refused
(TASKMON_BACKEND=redis) or degraded (auto) with a line saying what to change, within seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from taskmon.harness.processes import wait_until
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.redis_tls import RedisTls, TlsFiles
from taskmon.harness.stack import GunicornInstance
from tests.support.lifecycle import Recorder, run_lifecycle, wait_done
from tests.support.stacks import redis_mode_env

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

WORKERS = 4
TOKEN = "admin-token-tls-e2e"
BASE_ENV = {"TASKMON_ENGINE": "tone", "TASKMON_TONE_MS_PER_CHAR": "1"}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return TlsFiles.generate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def mtls_redis(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> Iterator[RedisServer]:
    with RedisServer(
        workdir=tmp_path_factory.mktemp("redis"), tls=RedisTls(tls_files, "yes")
    ) as server:
        yield server


def test_a_whole_lifecycle_over_tls_with_a_client_certificate(
    mtls_redis: RedisServer, tmp_path: Path
) -> None:
    url = mtls_redis.url_for(client_cert=True)
    env = redis_mode_env(url, tmp_path / "journal", limit=2, lease_ttl_ms=2000, ms_per_char=3)
    env |= {"TASKMON_ADMIN_TOKEN": TOKEN, "TASKMON_SSE_KEEPALIVE_S": "1"}
    with GunicornInstance(workers=WORKERS, env=env, workdir=tmp_path / "host") as host:
        rec = Recorder(host.base_url)
        first = run_lifecycle(rec, tasks=6, text="x" * 60, admin_token=TOKEN, label="tls")
        admin = redis.Redis.from_url(mtls_redis.url, decode_responses=True, socket_timeout=5)
        try:
            names = [str(c.get("name", "")) for c in admin.client_list()]
        finally:
            admin.close()
        # Redis away and back: the probe and the re-promotion reconnect over TLS.
        mtls_redis.stop_for_now()
        during = [rec.call("POST", "/api/tts", {"text": f"during {n}"}) for n in range(4)]
        mtls_redis.start()
        assert {a.status for a in during} == {202}
        wait_done(rec, [a.body["task_id"] for a in during])
        wait_until(
            lambda: all(not rec.call("GET", "/api/monitor/stats").body["degraded"]
                        for _ in range(8)),
            timeout=20, what="every worker back on Redis",
        )  # fmt: skip
        run_lifecycle(rec, tasks=4, text="y" * 40, label="tls-after")
        log = host.log_tail(5000)
    assert len(first.workers) >= 2
    # The only port is TLS: each worker's pool and subscriber are TLS connections.
    assert sum(name.startswith("taskmon:") for name in names) >= WORKERS
    assert sum(name.startswith("taskmon-sub:") for name in names) >= WORKERS
    assert "answers again" in log
    assert not [e for e in rec.exchanges if e.status >= 500]
    assert "CERTIFICATE_VERIFY_FAILED" not in log
    assert "closed the TLS connection" not in log


def start_refused(env: dict[str, str], workdir: Path) -> tuple[str, float]:
    """gunicorn's log once it gave up, and how long that took."""
    host = GunicornInstance(workers=2, env=env, workdir=workdir)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="gunicorn exited"):
        host.start(ready_timeout=60)
    return host.log_tail(400), time.monotonic() - started


def test_without_the_client_certificate_redis_mode_refuses_to_start(
    mtls_redis: RedisServer, tmp_path: Path
) -> None:
    env = {**BASE_ENV, "TASKMON_BACKEND": "redis",
           "TASKMON_REDIS_URL": mtls_redis.url_for(client_cert=False)}  # fmt: skip
    log, took = start_refused(env, tmp_path)
    assert "TASKMON_BACKEND=redis but Redis at rediss://127.0.0.1:" in log
    assert "demands a client certificate (tls-auth-clients yes)" in log
    assert "&ssl_certfile=CLIENT.crt&ssl_keyfile=CLIENT.key" in log
    assert took < 30, f"refused, not hung: {took:.1f} s"


def test_a_wrong_ca_refuses_to_start_and_says_which_option(
    mtls_redis: RedisServer, tmp_path: Path
) -> None:
    stranger = TlsFiles.generate(tmp_path / "stranger", name="stranger")
    env = {**BASE_ENV, "TASKMON_BACKEND": "redis",
           "TASKMON_REDIS_URL": mtls_redis.url_for(ca_cert=stranger.ca_cert)}  # fmt: skip
    log, took = start_refused(env, tmp_path / "host")
    assert "the TLS certificate of Redis at rediss://127.0.0.1:" in log
    assert "CERTIFICATE_VERIFY_FAILED" in log
    assert "set ssl_ca_certs in TASKMON_REDIS_URL to the CA certificate" in log
    assert took < 30, f"refused, not hung: {took:.1f} s"


def test_without_the_client_certificate_auto_mode_serves_degraded(
    mtls_redis: RedisServer, tmp_path: Path
) -> None:
    env = {**BASE_ENV, "TASKMON_BACKEND": "auto",
           "TASKMON_REDIS_URL": mtls_redis.url_for(client_cert=False)}  # fmt: skip
    with GunicornInstance(workers=2, env=env, workdir=tmp_path) as host:
        stats = host.stats()
        log = host.log_tail(400)
    assert (stats["backend"], stats["degraded"]) == ("memory", True)
    warnings = [line for line in log.splitlines() if "demands a client certificate" in line]
    assert len(warnings) == 2, "one WARNING per worker"
    assert all("WARNING" in line and "running on the in-memory backend" in line
               for line in warnings)  # fmt: skip
