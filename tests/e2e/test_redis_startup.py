"""Start-up selection, secrets and admin, on real `gunicorn -w 2` processes and real Redis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from taskmon.harness.client import call
from taskmon.harness.processes import free_port
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.stack import GunicornInstance, http_get

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

SECRET = "s3cret-Pa55word"
BASE_ENV = {"TASKMON_ENGINE": "tone", "TASKMON_TONE_MS_PER_CHAR": "1"}


def test_password_never_reaches_logs_or_readyz(tmp_path: Path) -> None:
    with RedisServer(workdir=tmp_path / "redis", password=SECRET) as server:
        env = {**BASE_ENV, "TASKMON_BACKEND": "redis", "TASKMON_REDIS_URL": server.url}
        with GunicornInstance(workers=2, env=env, workdir=tmp_path / "host") as host:
            ready = call(host.base_url, "GET", "/readyz")
            accepted = call(host.base_url, "POST", "/api/tts", {"text": "secret safe"})
            log = host.log_tail(500)
    assert ready.status == 200
    assert ready.body["backend"] == "redis"
    assert ready.body["target"] == f"redis://:***@127.0.0.1:{server.port}/0"
    assert accepted.status == 202
    assert SECRET not in json.dumps(ready.body)
    assert SECRET not in log


def test_auto_without_redis_falls_back_to_memory_with_one_clear_warning(tmp_path: Path) -> None:
    url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"  # nothing listens there
    env = {**BASE_ENV, "TASKMON_BACKEND": "auto", "TASKMON_REDIS_URL": url}
    with GunicornInstance(workers=2, env=env, workdir=tmp_path) as host:
        stats = host.stats()
        ready = json.loads(http_get(host.base_url, "/readyz")[2])
        log = host.log_tail(500)
    assert stats["backend"] == "memory"
    assert stats["degraded"] is True
    assert (ready["backend"], ready["degraded"]) == ("memory", True)
    warnings = [line for line in log.splitlines() if "does not answer" in line]
    assert len(warnings) == 2, "one WARNING per worker"
    assert all("WARNING" in line and ":***@" in line for line in warnings)
    assert "global cap" in warnings[0]
    assert SECRET not in log


def test_backend_redis_refuses_to_boot_without_redis(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    env = {**BASE_ENV, "TASKMON_BACKEND": "redis", "TASKMON_REDIS_URL": url}
    host = GunicornInstance(workers=2, env=env, workdir=tmp_path)
    with pytest.raises(RuntimeError, match="gunicorn exited") as failure:
        host.start(ready_timeout=60)
    assert "TASKMON_BACKEND=redis but Redis at" in str(failure.value) + host.log_tail(200)


def test_admin_changes_the_cap_of_every_worker_of_every_host(tmp_path: Path) -> None:
    with RedisServer(workdir=tmp_path / "redis") as server:
        env = {
            **BASE_ENV,
            "TASKMON_BACKEND": "redis",
            "TASKMON_REDIS_URL": server.url,
            "TASKMON_ADMIN_TOKEN": "admin-token-startup-e2e",
        }
        with (
            GunicornInstance(workers=2, env=env, workdir=tmp_path / "a") as host_a,
            GunicornInstance(workers=2, env=env, workdir=tmp_path / "b") as host_b,
        ):
            no_token = call(host_a.base_url, "PUT", "/api/admin/concurrency", {"limit": 7})
            wrong = call(
                host_a.base_url, "PUT", "/api/admin/concurrency", {"limit": 7},
                headers={"Authorization": "Bearer nope"},
            )  # fmt: skip
            bad = call(
                host_a.base_url, "PUT", "/api/admin/concurrency", {"limit": 0},
                headers={"Authorization": "Bearer admin-token-startup-e2e"},
            )  # fmt: skip
            changed = call(
                host_a.base_url, "PUT", "/api/admin/concurrency", {"limit": 7},
                headers={"Authorization": "Bearer admin-token-startup-e2e"},
            )  # fmt: skip
            limits = {
                call(base, "GET", "/api/monitor/stats").body["concurrency"]["limit"]
                for base in [host_a.base_url, host_b.base_url] * 6
            }
            permits = call(host_b.base_url, "GET", "/api/monitor/permits")
    assert no_token.status == 401
    assert no_token.headers["WWW-Authenticate"].startswith("Bearer")
    assert wrong.status == 401
    assert bad.status == 400
    assert changed.status == 200
    assert changed.body["scope"] == "global"
    assert limits == {7}
    assert permits.status == 200
    assert permits.body["limit"] == 7
    assert permits.body["holders"] == []


def test_admin_endpoints_do_not_exist_without_a_token(tmp_path: Path) -> None:
    env = {**BASE_ENV, "TASKMON_BACKEND": "memory"}
    with GunicornInstance(workers=1, env=env, workdir=tmp_path) as host:
        answer = call(host.base_url, "PUT", "/api/admin/concurrency", {"limit": 2})
    assert answer.status == 404


def test_an_evicting_redis_is_named_in_a_warning(tmp_path: Path) -> None:
    with RedisServer(workdir=tmp_path / "redis") as server:
        admin = redis.Redis.from_url(server.url)
        admin.config_set("maxmemory-policy", "allkeys-lru")
        admin.close()
        env = {**BASE_ENV, "TASKMON_BACKEND": "redis", "TASKMON_REDIS_URL": server.url}
        with GunicornInstance(workers=1, env=env, workdir=tmp_path / "host") as host:
            log = host.log_tail(200)
    assert "maxmemory-policy allkeys-lru" in log
    assert "noeviction" in log
