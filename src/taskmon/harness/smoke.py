"""`python -m taskmon.harness.smoke [--redis]`: start `taskmon serve --workers 4`, use it as a
client would.

Exits 0 when a task submitted over HTTP ends done with a WAV, its SSE stream ends at the
terminal state, and the monitor page and stats answer (with `--redis`: against a redis-server
the smoke starts, and stats must say so); 1 with the reason and the server log otherwise. The
server (and Redis) are always stopped, as process groups, before it returns.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from taskmon.harness.processes import ManagedProcess, free_port, wait_until
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.sse_client import read_stream
from taskmon.harness.stack import http_get


def _taskmon_command() -> list[str]:
    script = shutil.which("taskmon", path=str(Path(sys.executable).parent)) or shutil.which(
        "taskmon"
    )
    return [script] if script else [sys.executable, "-m", "taskmon.cli"]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def run_smoke(workers: int, workdir: Path, redis_url: str | None = None) -> str:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TASKMON_RESULT_DIR": str(workdir / "results")}
    if redis_url:
        env.update(TASKMON_BACKEND="redis", TASKMON_REDIS_URL=redis_url)
    env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(workdir))
    server = ManagedProcess(
        [*_taskmon_command(), "serve", "--workers", str(workers), "--bind", f"127.0.0.1:{port}"],
        env=env,
        log_path=workdir / "serve.log",
    )
    try:

        def ready() -> bool:
            _check(server.alive(), "taskmon serve exited")
            try:
                return http_get(base, "/readyz")[0] == 200
            except OSError:
                return False

        wait_until(ready, timeout=60, what="taskmon serve answering /readyz")
        # One connection for the whole conversation: memory mode keeps a task in its worker.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/api/tts", body=json.dumps({"text": "taskmon smoke test"}),
                     headers={"Content-Type": "application/json"})  # fmt: skip
        response = conn.getresponse()
        accepted = json.loads(response.read())
        _check(response.status == 202, f"POST /api/tts answered {response.status}: {accepted}")
        stream = read_stream(base, accepted["stream_url"], connection=conn, timeout=60)
        _check(stream.ended and bool(stream.messages), "the SSE stream did not end with events")
        final = stream.messages[-1].json()
        _check(final["state"] == "done", f"task ended {final}")
        conn.request("GET", accepted["result_url"])
        result = conn.getresponse()
        wav = result.read()
        _check(result.status == 200 and wav[:4] == b"RIFF", f"result answered {result.status}")
        conn.close()
        stats = json.loads(http_get(base, "/api/monitor/stats")[2])
        expected = "redis" if redis_url else "memory"
        _check(stats["backend"] == expected, f"stats say backend {stats['backend']}")
        _check(http_get(base, "/monitor")[0] == 200, "the monitor page did not answer 200")
        return (
            f"smoke ok: {workers} workers, engine task done in "
            f"{final['finished_at'] - final['created_at']:.2f} s, {len(wav)} bytes of WAV, "
            f"stats backend={stats['backend']} from {stats['worker']}"
        )
    except BaseException:
        print(server.log_tail(60), file=sys.stderr)
        raise
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--redis", action="store_true", help="start a redis-server and use it")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="taskmon-smoke-"))
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            url = None
            if args.redis:
                url = stack.enter_context(RedisServer(workdir=workdir / "redis")).url
            print(run_smoke(args.workers, workdir, url), f"({time.monotonic() - started:.1f} s)")
    except (AssertionError, TimeoutError, RuntimeError) as exc:
        print(f"smoke FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
