"""The process stack itself: it finds its workers, signals only them, and cleans up."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from taskmon.harness.processes import wait_until
from taskmon.harness.stack import GunicornInstance

pytestmark = pytest.mark.e2e


def test_workers_are_found_signalled_and_replaced(tmp_path: Path) -> None:
    env = {"TASKMON_BACKEND": "memory", "TASKMON_ENGINE": "tone"}
    with GunicornInstance(workers=2, env=env, workdir=tmp_path) as host:
        first = host.worker_pids()
        assert len(first) == 2
        with pytest.raises(ValueError, match="not a worker"):
            host.signal_worker(os.getpid())
        host.signal_worker(first[0], signal.SIGKILL)
        wait_until(
            lambda: len(host.worker_pids()) == 2 and first[0] not in host.worker_pids(),
            timeout=30,
            what="gunicorn replacing the killed worker",
        )
        host.signal_worker(first[1], signal.SIGSTOP)  # a hung worker; stop() must still work
        master = host.process.pid if host.process else 0
    assert master
    with pytest.raises(ProcessLookupError):
        os.kill(master, 0)
    # Orphaned workers are reaped by init, a moment after the group kill.
    wait_until(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in first),
        timeout=10,
        what="every worker gone",
    )
