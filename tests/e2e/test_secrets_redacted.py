"""The Redis password and the admin token never leave taskmon: `gunicorn -w 4` with both set,
driven through its start, every endpoint (a task lifecycle, an admin call with a wrong token, a
404, bad bodies), a Redis outage (the failover lines quote the URL), and its shutdown; then
neither secret is in any line of gunicorn's output, its access log or the synthesis journal, nor
in any response body or header. The URL is still quoted, with `***` for the password.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from taskmon.harness.client import call
from taskmon.harness.processes import wait_until
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.stack import GunicornInstance
from tests.support.acl import USER, acl_line
from tests.support.lifecycle import Recorder, run_lifecycle, wait_done
from tests.support.stacks import redis_mode_env

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

PASSWORD = "S3cr3t-pw-xyz"
ADMIN_TOKEN = "adm1n-T0ken-qrs-tuv"
REDIS_ADMIN_PASSWORD = "redis-admin-pw"
UNKNOWN = "0" * 32


def drive_every_endpoint(rec: Recorder) -> None:
    """Each endpoint once, and each way of calling one wrongly."""
    for path in ("/readyz", "/healthz", "/metrics", "/api/monitor/stats",
                 "/api/monitor/permits", "/monitor", "/nowhere", f"/api/task/status/{UNKNOWN}",
                 f"/api/task/stream/{UNKNOWN}", f"/api/task/result/{UNKNOWN}",
                 "/api/task/status/not-an-id"):  # fmt: skip
        rec.call("GET", path)
    admin = "/api/admin/concurrency"
    wrong = rec.call("PUT", admin, {"limit": 3}, headers={"Authorization": "Bearer wrong"})
    assert wrong.status == 401
    assert rec.call("PUT", admin, {"limit": 3}).status == 401
    basic = rec.call("PUT", admin, {"limit": 3}, headers={"Authorization": f"Basic {PASSWORD}"})
    assert basic.status == 401
    bad = rec.call("PUT", admin, {"limit": 0}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert bad.status == 400
    assert rec.call("POST", "/api/tts", {"txt": "unknown field"}).status == 400
    assert rec.call("POST", "/api/tts", ["not", "an", "object"]).status == 400
    assert rec.call("POST", "/api/tts", {"text": "x" * 6000}).status == 400
    assert rec.call("DELETE", "/api/tts").status == 405
    assert (
        rec.call("POST", "/api/tts", {"text": "k"}, headers={"Idempotency-Key": " "}).status == 400
    )


def test_no_secret_in_any_log_line_or_answer(tmp_path: Path) -> None:
    with RedisServer(
        workdir=tmp_path / "redis", password=REDIS_ADMIN_PASSWORD,
        acl_users=[acl_line(PASSWORD)],
    ) as server:  # fmt: skip
        url = server.url_for(USER, PASSWORD)
        assert f"{USER}:{PASSWORD}@" in url
        journal = tmp_path / "journal"
        env = redis_mode_env(url, journal, limit=2, lease_ttl_ms=2000, ms_per_char=2)
        access_log = tmp_path / "access.log"
        env |= {
            "TASKMON_ADMIN_TOKEN": ADMIN_TOKEN,
            "TASKMON_ACCESS_LOG": str(access_log),
            "TASKMON_LOG_LEVEL": "debug",
            "TASKMON_SSE_KEEPALIVE_S": "1",
        }
        host = GunicornInstance(workers=4, env=env, workdir=tmp_path / "host")
        try:
            host.start()
            rec = Recorder(host.base_url)
            drive_every_endpoint(rec)
            run_lifecycle(rec, tasks=4, text="z" * 40, admin_token=ADMIN_TOKEN, label="secret")

            server.stop_for_now()  # Redis away: every worker trips on its next call
            drive_every_endpoint(rec)
            during = [rec.call("POST", "/api/tts", {"text": f"away {n}"}) for n in range(4)]
            assert {a.status for a in during} == {202}, [(a.status, a.body) for a in during]
            server.start()
            wait_done(rec, [a.body["task_id"] for a in during])
            wait_until(
                lambda: all(not call(host.base_url, "GET", "/api/monitor/stats").body["degraded"]
                            for _ in range(8)),
                timeout=20, what="every worker back on Redis",
            )  # fmt: skip
            drive_every_endpoint(rec)
            ready = rec.call("GET", "/readyz")
        finally:
            host.stop()  # the shutdown's lines are in the log too
        assert host.process is not None
        output = host.process.log_path.read_text(errors="replace")
    logs = {
        "gunicorn output": output,
        "access log": access_log.read_text(),
        **{f"journal {p.name}": p.read_text() for p in journal.glob("*")},
    }
    secrets = {PASSWORD, quote(PASSWORD, safe=""), ADMIN_TOKEN}
    for secret in secrets:
        for name, text in logs.items():
            leaked = [line for line in text.splitlines() if secret in line]
            assert leaked == [], f"{secret!r} in the {name}: {leaked[:3]}"
        for exchange in rec.exchanges:
            shown = f"{exchange.headers} {exchange.body}"
            assert secret not in shown, (exchange.method, exchange.path, exchange.status)
    # Still said where taskmon connects, and as whom.
    redacted = f"redis://{USER}:***@127.0.0.1:{server.port}/0"
    assert ready.body["target"] == redacted
    failover_lines = [line for line in output.splitlines() if "stopped answering" in line]
    assert failover_lines, "the outage was logged"
    assert all(redacted in line for line in failover_lines)
    assert "answers again" in output
    assert "GET /api/monitor/stats" in logs["access log"], "the access log was written"
    assert {e.status for e in rec.exchanges} >= {200, 202, 400, 401, 404, 405}
    assert not [e for e in rec.exchanges if e.status >= 500]


def test_a_refused_start_names_no_password(tmp_path: Path) -> None:
    wrong = "Wr0ng-pw-abc"
    with RedisServer(
        workdir=tmp_path / "redis", password=REDIS_ADMIN_PASSWORD,
        acl_users=[acl_line(PASSWORD)],
    ) as server:  # fmt: skip
        env = {
            "TASKMON_ENGINE": "tone", "TASKMON_BACKEND": "redis",
            "TASKMON_REDIS_URL": server.url_for(USER, wrong), "TASKMON_ADMIN_TOKEN": ADMIN_TOKEN,
        }  # fmt: skip
        host = GunicornInstance(workers=2, env=env, workdir=tmp_path / "host")
        with pytest.raises(RuntimeError, match="gunicorn exited"):
            host.start(ready_timeout=60)
        assert host.process is not None
        output = host.process.log_path.read_text(errors="replace")
    assert f"Redis at redis://{USER}:***@127.0.0.1:{server.port}/0 refused the user" in output
    assert wrong not in output
    assert ADMIN_TOKEN not in output
