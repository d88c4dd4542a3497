"""An engine process dies with its worker: a SIGKILLed worker leaves no synthesis running
past the permit it held. Real processes: a worker (a Python process running the engine on a
thread, as the executor does) and a stand-in espeak-ng that only records its pid and waits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from taskmon.engines import death_tied_launcher
from taskmon.harness.processes import wait_until

pytestmark = pytest.mark.e2e

# What EspeakEngine runs: `--voices` lists one voice; a synthesis records its pid and hangs.
FAKE_ESPEAK = """#!/bin/sh
if [ "$1" = "--voices" ]; then
  echo "Pty Language       Age/Gender VoiceName          File                 Other Languages"
  echo " 5  en              --/M      English            gmw/en               (en 2)"
  exit 0
fi
echo $$ > "$PID_FILE"
exec sleep 60
"""

WORKER = """
import sys, threading
from pathlib import Path
from taskmon.engines import EspeakEngine
engine = EspeakEngine(binary=sys.argv[1], timeout_s=120)
threading.Thread(target=engine.synthesize, args=("a long text", "en", Path(sys.argv[2]))).start()
threading.Event().wait()
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited: it only waits for its parent (init here) to reap it.
    stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}").exists() else ""
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not death_tied_launcher(), reason="needs util-linux's setpriv (Linux)")
def test_the_engine_process_of_a_killed_worker_dies_with_it(tmp_path: Path) -> None:
    fake = tmp_path / "espeak-ng"
    fake.write_text(FAKE_ESPEAK)
    fake.chmod(0o755)
    pid_file = tmp_path / "engine.pid"
    worker = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WORKER), str(fake), str(tmp_path / "out.wav")],
        env={**os.environ, "PID_FILE": str(pid_file)},
        start_new_session=True,
    )
    engine_pid = None
    try:
        wait_until(pid_file.exists, timeout=30, what="the engine process started")
        wait_until(lambda: pid_file.read_text().strip() != "", timeout=5, what="its pid")
        engine_pid = int(pid_file.read_text())
        assert alive(engine_pid)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        wait_until(lambda: not alive(engine_pid), timeout=5, what="the engine process gone")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        if engine_pid is not None and alive(engine_pid):
            os.kill(engine_pid, signal.SIGKILL)
