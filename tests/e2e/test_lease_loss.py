"""A holder stalled past its lease (SIGSTOP) stops its synthesis as soon as it runs again and
records no result; the overlap with the next holder is the stall past the TTL, no more.

Redis mode, limit 1, leases of 1 s, two workers; a 6 s synthesis on one of them, stopped for
2.5 s. Before the lease keeper stopped syntheses, the stalled one synthesized on for seconds
after the next holder was granted (the next holder got the permit 0.93 s into the stall).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from taskmon.harness.client import call, wait_terminal
from taskmon.harness.journal_check import read_events
from taskmon.harness.processes import wait_until
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.stack import GunicornInstance
from tests.support.stacks import redis_mode_env, submit_elsewhere

pytestmark = [pytest.mark.e2e, pytest.mark.redis]
STALL_S = 2.5


def test_a_holder_stalled_past_its_lease_stops_and_keeps_no_result(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    with RedisServer(workdir=tmp_path / "redis") as server:
        env = redis_mode_env(server.url, journal, limit=1, lease_ttl_ms=1000)
        with GunicornInstance(workers=2, env=env, workdir=tmp_path / "host") as host:
            long_id = call(host.base_url, "POST", "/api/tts", {"text": "s" * 600}).body["task_id"]

            def running_on() -> str | None:
                body = call(host.base_url, "GET", f"/api/task/status/{long_id}").body
                return str(body["worker"]) if body["state"] == "running" else None

            wait_until(lambda: running_on() is not None, timeout=30, what="the long synthesis")
            stalled = running_on()
            assert stalled is not None
            # A task for the other worker: it runs where it was accepted.
            short_id = submit_elsewhere(host, stalled, {"text": "next holder"}).body["task_id"]
            pid = int(stalled.rsplit(":", 1)[1])  # X-Worker-Id is host:pid
            host.signal_worker(pid, signal.SIGSTOP)
            try:
                time.sleep(STALL_S)  # the fault itself: a worker stopped for 2.5 s
            finally:
                host.signal_worker(pid, signal.SIGCONT)
            resumed_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            final = wait_terminal([host.base_url], [long_id, short_id], timeout=60)
            result = call(host.base_url, "GET", f"/api/task/result/{long_id}")

    assert final[short_id]["state"] == "done"
    assert final[long_id]["state"] == "failed"
    # Its own keeper stops it (lease_lost), unless another worker's reaper judged the stalled
    # worker dead first (abandoned): either way no result.
    assert final[long_id]["error"]["code"] in ("lease_lost", "abandoned"), final[long_id]
    assert result.status != 200
    events, _ = read_events(journal)
    start = {task: t for t, delta, (_, task, _) in events if delta > 0}
    end = {task: t for t, delta, (_, task, _) in events if delta < 0}
    assert long_id in end, "the stalled synthesis never ended"
    stopped_after_resume_s = (end[long_id] - resumed_ns) / 1e9
    overlap_s = max(0, end[long_id] - start[short_id]) / 1e9
    print(f"stopped {stopped_after_resume_s:.3f} s after SIGCONT; overlap {overlap_s:.3f} s")
    # 3.5 s of the synthesis were left at SIGCONT: a stop within a second is the keeper's.
    assert stopped_after_resume_s < 1.0
    # The next holder may only start once the lease ended (1 s into the stall): what overlaps
    # is the rest of the stall and the time to stop.
    assert overlap_s < STALL_S - 1.0 + 1.0
