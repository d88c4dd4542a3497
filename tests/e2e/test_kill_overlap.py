"""A holder SIGKILLed mid-synthesis: its espeak-ng process dies with it, so when its permit
returns (one lease later) and the next holder starts, nothing of the dead holder still runs.

Redis mode, real espeak-ng, limit 1, leases of 1 s, two workers. The overlap between the dead
holder's engine process and the next synthesis must be zero; the figures are printed. Before
engine processes were tied to their worker, espeak-ng ran on after its worker's death and
after the permit had returned.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from taskmon.harness.client import call, wait_terminal
from taskmon.harness.journal_check import read_events
from taskmon.harness.processes import children_of, wait_until
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.stack import GunicornInstance
from tests.support.stacks import redis_mode_env, submit_elsewhere

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.espeak]


def espeak_children(worker_pid: int) -> list[int]:
    found = []
    for pid in children_of(worker_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"espeak" in cmdline:
            found.append(pid)
        found += [p for p in children_of(pid) if b"espeak" in _cmdline(p)]
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_killed_holders_engine_is_gone_before_the_next_holder_starts(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    with RedisServer(workdir=tmp_path / "redis") as server:
        env = redis_mode_env(server.url, journal, limit=1, lease_ttl_ms=1000)
        env["TASKMON_ENGINE"] = "espeak"
        with GunicornInstance(workers=2, env=env, workdir=tmp_path / "host") as host:
            long_text = "This sentence is spoken for a long while. " * 100
            long_id = call(host.base_url, "POST", "/api/tts", {"text": long_text}).body["task_id"]

            def holder() -> str | None:
                body = call(host.base_url, "GET", f"/api/task/status/{long_id}").body
                return str(body["worker"]) if body["state"] == "running" else None

            wait_until(lambda: holder() is not None, timeout=30, what="the long synthesis")
            worker = holder()
            assert worker is not None
            worker_pid = int(worker.rsplit(":", 1)[1])
            wait_until(
                lambda: bool(espeak_children(worker_pid)), timeout=10, what="espeak-ng running"
            )
            (engine_pid,) = espeak_children(worker_pid)
            # The next holder must live on the other worker.
            next_id = submit_elsewhere(host, worker, {"text": "next holder"}).body["task_id"]
            killed_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            host.signal_worker(worker_pid, signal.SIGKILL)
            wait_until(lambda: gone(engine_pid), timeout=5, interval=0.001, what="engine gone")
            engine_gone_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            final = wait_terminal([host.base_url], [next_id, long_id], timeout=60)

    assert final[next_id]["state"] == "done"
    assert final[long_id]["state"] == "failed"
    events, _ = read_events(journal)
    next_start = min(t for t, delta, (_, task, _) in events if delta > 0 and task == next_id)
    engine_died_after_s = (engine_gone_ns - killed_ns) / 1e9
    next_after_kill_s = (next_start - killed_ns) / 1e9
    overlap_s = max(0, engine_gone_ns - next_start) / 1e9
    print(f"engine gone {engine_died_after_s:.3f} s after SIGKILL; next holder started "
          f"{next_after_kill_s:.3f} s after it; overlap {overlap_s:.3f} s")  # fmt: skip
    assert overlap_s == 0
    assert not os.path.exists(f"/proc/{engine_pid}/cmdline") or gone(engine_pid)
