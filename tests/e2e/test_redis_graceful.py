"""I1 through a graceful reload: a synthesis still running when its worker is told to stop
keeps its permit (leases renewed) until it ends, so the new worker waits instead of
exceeding the cap; and the task still ends done.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from taskmon.harness.client import call, wait_terminal
from taskmon.harness.journal_check import check_cap
from taskmon.harness.processes import wait_until
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.stack import GunicornInstance
from tests.support.stacks import redis_mode_env

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


def test_cap_holds_while_a_reloaded_worker_finishes_its_synthesis(tmp_path: Path) -> None:
    with RedisServer(workdir=tmp_path / "redis") as server:
        env = redis_mode_env(server.url, tmp_path / "journal", limit=1, lease_ttl_ms=2000)
        with GunicornInstance(workers=1, env=env, workdir=tmp_path / "host") as host:
            # 1400 characters: 14 s of synthesis, longer than the 10 s the closing worker
            # waits and than the lease, shorter than gunicorn's 30 s graceful timeout.
            long = call(host.base_url, "POST", "/api/tts", {"text": "r" * 1400}).body["task_id"]

            def state(task_id: str) -> str:
                return str(call(host.base_url, "GET", f"/api/task/status/{task_id}").body["state"])

            wait_until(lambda: state(long) == "running", timeout=30, what="long task running")
            old_worker = call(host.base_url, "GET", f"/api/task/status/{long}").body["worker"]
            assert host.process is not None
            host.process.process.send_signal(signal.SIGHUP)  # gunicorn: graceful reload

            def new_worker_answers() -> bool:
                answer = call(host.base_url, "GET", "/readyz")
                return answer.status == 200 and answer.worker != old_worker

            wait_until(new_worker_answers, timeout=30, what="the reloaded worker")
            short = call(host.base_url, "POST", "/api/tts", {"text": "after the reload"})
            assert short.status == 202
            final = wait_terminal([host.base_url], [long, short.body["task_id"]], timeout=60)

    assert final[long]["state"] == "done", final[long]
    assert final[short.body["task_id"]]["state"] == "done"
    assert final[short.body["task_id"]]["worker"] != old_worker
    report = check_cap(tmp_path / "journal")
    assert report.syntheses == 2
    assert not report.violates(1), report.summary(1)
    assert report.unmatched_starts == []
