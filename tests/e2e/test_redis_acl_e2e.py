"""`gunicorn -w 4` running as the shipped ACL user (deploy/redis/taskmon.acl) on a real
redis-server that loads it, through everything it does: tasks beyond the limit (waiters handed
their permit), streams on other workers, stats, permits, an operator's limit, a killed worker
reaped, Redis killed and restarted empty under it (degrade, write back, re-promote, scripts
loaded again), and the same again after. Redis refuses it nothing but the CONFIG GET it is
meant to refuse (its ACL LOG, read before the restart empties it and after), and the log has
no NOPERM. Take one `+command` out of the file and this test fails.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from taskmon.harness.processes import wait_until
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.stack import GunicornInstance
from tests.support.acl import USER, acl_line, acl_refusals, describe
from tests.support.lifecycle import Recorder, run_lifecycle, wait_done
from tests.support.stacks import redis_mode_env

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

ADMIN_PASSWORD = "admin-pw-e2e"
PASSWORD = "taskmon-pw-e2e"
TOKEN = "admin-token-e2e-acl"
WORKERS = 4
LEASE_TTL_MS = 2000
REFUSED = re.compile(r"NOPERM|can't run this command|can't access|no permissions", re.I)


@pytest.fixture
def admin(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=5)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(
        workdir=tmp_path / "redis", password=ADMIN_PASSWORD, acl_users=[acl_line(PASSWORD)]
    ) as started:
        yield started


def test_taskmon_runs_everything_as_the_acl_user(
    server: RedisServer, admin: redis.Redis, tmp_path: Path
) -> None:
    env = redis_mode_env(
        server.url_for(USER, PASSWORD), tmp_path / "journal", limit=2,
        lease_ttl_ms=LEASE_TTL_MS, ms_per_char=3,
    )  # fmt: skip
    env |= {"TASKMON_ADMIN_TOKEN": TOKEN, "TASKMON_SSE_KEEPALIVE_S": "1"}
    with GunicornInstance(workers=WORKERS, env=env, workdir=tmp_path / "host") as host:
        rec = Recorder(host.base_url)
        before = run_lifecycle(rec, tasks=6, text="x" * 60, admin_token=TOKEN, label="before")
        assert len(before.workers) >= 2

        # A worker killed while it synthesizes: another worker's reaper fails its task.
        long = rec.call("POST", "/api/tts", {"text": "k" * 1500})
        assert long.status == 202
        task_id = long.body["task_id"]

        def status() -> dict[str, str]:
            return rec.call("GET", f"/api/task/status/{task_id}").body  # type: ignore[no-any-return]

        wait_until(lambda: status()["state"] == "running", timeout=30, what="task running")
        host.signal_worker(int(status()["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
        wait_until(lambda: status()["state"] == "failed", timeout=20, what="task reaped")
        assert status()["error"]["code"] == "abandoned"  # type: ignore[index]
        refused_before_restart = acl_refusals(admin)

        # Redis killed and restarted empty, with tasks accepted while it is away.
        server.stop()
        during = [rec.call("POST", "/api/tts", {"text": f"during {n}"}) for n in range(6)]
        assert {a.status for a in during} == {202}, [a.body for a in during]
        server.start()
        wait_done(rec, [a.body["task_id"] for a in during])
        wait_until(
            lambda: all(not rec.call("GET", "/api/monitor/stats").body["degraded"]
                        for _ in range(8)),
            timeout=20, what="every worker back on Redis",
        )  # fmt: skip
        after = run_lifecycle(rec, tasks=6, text="y" * 60, admin_token=TOKEN, label="after")
        refused_after_restart = acl_refusals(admin)
        log = host.log_tail(20_000)

    assert refused_before_restart == [], describe(refused_before_restart)
    assert refused_after_restart == [], describe(refused_after_restart)
    assert [line for line in log.splitlines() if REFUSED.search(line)] == []
    assert "lost its data" in log or "answers again" in log, "Redis was away for the workers"
    assert not [e for e in rec.exchanges if e.status >= 500], "no 5xx"
    # CONFIG GET refused: each worker start says it once, and goes on.
    skipped = [line for line in log.splitlines() if "maxmemory-policy not checked" in line]
    assert len(skipped) >= WORKERS + 1, skipped  # and the replacement of the killed one
    assert all("this user may not run CONFIG GET" in line for line in skipped)
    assert len(after.workers) >= 2
