"""The environment of a Redis-mode instance under test: the settings every e2e test of the
cap spells the same way (tone engine, a journal to judge I1 from); and workers paused
(SIGSTOP) for a call, to reach one worker or to keep a call off one: which worker accepts a
connection is the kernel's choice, and a stopped process accepts none."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from taskmon.harness.client import Answer, call
from taskmon.harness.processes import wait_until
from taskmon.harness.stack import GunicornInstance


def redis_mode_env(
    redis_url: str, journal_dir: Path, *, limit: int, lease_ttl_ms: int, ms_per_char: int = 10
) -> dict[str, str]:
    """TASKMON_ variables for `gunicorn` in Redis mode with the tone engine and a journal."""
    return {
        "TASKMON_BACKEND": "redis",
        "TASKMON_REDIS_URL": redis_url,
        "TASKMON_ENGINE": "tone",
        "TASKMON_TONE_MS_PER_CHAR": str(ms_per_char),
        "TASKMON_CONCURRENCY_LIMIT": str(limit),
        "TASKMON_LEASE_TTL_MS": str(lease_ttl_ms),
        "TASKMON_JOURNAL_DIR": str(journal_dir),
    }


@contextmanager
def paused(host: GunicornInstance, *workers: str, at_most_s: float) -> Iterator[None]:
    """`workers` (X-Worker-Id host:pid) of `host` stopped (SIGSTOP) for the block, resumed in
    any case; a block that held them longer than `at_most_s` fails the test, since a longer
    pause can end the workers' leases and change what the test is about."""
    pids = [int(worker.rsplit(":", 1)[1]) for worker in workers]
    stopped_pids: list[int] = []
    stopped = time.monotonic()
    try:
        for pid in pids:
            host.signal_worker(pid, signal.SIGSTOP)  # refuses a pid not one of its workers
            stopped_pids.append(pid)
        for pid in pids:
            # SIGSTOP is delivered, not awaited: a worker running on another CPU could still
            # accept a connection until the kernel shows it stopped.
            _wait_stopped(pid)
        yield
    finally:
        for pid in stopped_pids:
            with contextlib.suppress(ProcessLookupError):  # one that died: resume the rest
                os.kill(pid, signal.SIGCONT)
    held = time.monotonic() - stopped
    assert held <= at_most_s, f"{workers} paused {held:.2f} s, more than {at_most_s} s"


def _wait_stopped(pid: int) -> None:
    wait_until(lambda: _state(pid) in {"T", "t", None}, timeout=5, interval=0.001,
               what=f"worker {pid} stopped")  # fmt: skip


def _state(pid: int) -> str | None:
    """The process state letter of /proc/<pid>/stat (T: stopped), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def others_than(host: GunicornInstance, worker: str) -> list[str]:
    """The X-Worker-Ids of `host`'s workers but `worker` (host:pid). Raises ValueError when
    `worker` is not one of them (pausing all the others would then pause every worker)."""
    name, _, pid = worker.rpartition(":")
    pids = host.worker_pids()
    if not pid.isdigit() or int(pid) not in pids:
        raise ValueError(f"{worker!r} is not a worker of the instance on port {host.port}")
    return [f"{name}:{other}" for other in pids if other != int(pid)]


def submit_elsewhere(
    host: GunicornInstance, worker: str, body: dict[str, Any], *, within_s: float = 0.4
) -> Answer:
    """POST `body` to /api/tts on any worker of `host` but `worker` (X-Worker-Id host:pid).

    Which worker accepts a connection is the kernel's choice, and on a loaded machine one
    worker can win every race for dozens of connections in a row. A stopped process accepts
    nothing, so `worker` is paused for the one call, which must answer `within_s` (keep it
    well under a third of the lease TTL the test sets: the paused worker renews nothing).
    """
    with paused(host, worker, at_most_s=within_s + 0.2):
        answer = call(host.base_url, "POST", "/api/tts", body, timeout=within_s)
    assert answer.status == 202, answer.body
    assert answer.worker != worker, "a stopped worker accepted a connection"
    return answer
