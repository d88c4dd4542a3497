"""The command line: parse the flags, start redis-server and the workers, run the rounds,
print the report; redis-server, the workers and the temporary directory always stop.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import redis

from taskmon.config import load_settings
from taskmon.harness.redis_server import RedisServer
from taskmon.redis.connection import make_client

from . import __doc__ as DESCRIPTION
from .bench import Bench
from .params import CONTENDED_LIMIT, FAIR_CLIENTS, FAIR_HOLD_S, FAIR_LIMIT, RETRY_INTERVAL_S
from .pool import Pool
from .report import render, write_json
from .stats import summarize
from .subjects import PEERS, TASKMON, installed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.semaphore", description=DESCRIPTION)
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument(
        "--duration", type=float, default=2.0, help="seconds per throughput measurement (2)"
    )
    parser.add_argument("--processes", type=int, default=8, help="worker processes (8)")
    parser.add_argument("--handoffs", type=int, default=50, help="handoffs over all rounds (50)")
    parser.add_argument(
        "--warmup", type=float, default=0.3, help="seconds per measurement of a discarded round"
    )
    parser.add_argument("--out", type=Path, help="also write the results as JSON to this file")
    parser.add_argument(
        "--subjects",
        help=f"comma-separated subjects (default: every one installed; of {', '.join(PEERS)})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short run: 1 round of 0.5 s, 6 handoffs each"
    )
    options = parser.parse_args(argv)
    if options.quick:
        options.rounds, options.duration, options.handoffs, options.warmup = 1, 0.5, 6, 0.0
    options.subjects = _subjects(parser, options.subjects)
    if not 1 <= options.rounds <= 50:
        parser.error("--rounds must be 1..50")
    if not 0.1 <= options.duration <= 30:
        parser.error("--duration must be 0.1..30 s")
    if not 2 <= options.processes <= 64:
        parser.error("--processes must be 2..64")
    if not 0 <= options.handoffs <= 1000:
        parser.error("--handoffs must be 0..1000")
    if not 0 <= options.warmup <= 10:
        parser.error("--warmup must be 0..10 s")
    return options


def _subjects(parser: argparse.ArgumentParser, asked: str | None) -> list[str]:
    have = installed()
    if asked is None:
        return have
    names = [name.strip() for name in asked.split(",") if name.strip()]
    for name in names:
        if name not in PEERS:
            parser.error(f"unknown subject {name!r}; choose from {', '.join(PEERS)}")
        if name not in have:
            parser.error(f"{name} is not installed here (pip install {PEERS[name].distribution})")
    if TASKMON not in names:
        names.insert(0, TASKMON)  # every figure of a peer is read against taskmon's
    return names


def _commit() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if done.returncode == 0:
            return done.stdout.strip()
    return "unknown"


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds the finally blocks: workers and Redis stop


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if os.environ.pop("TASKMON_TEST_REDIS_URL", None):
        print("ignoring TASKMON_TEST_REDIS_URL: the benchmark starts its own redis-server")
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="taskmon-bench-") as workdir,
        RedisServer(workdir=Path(workdir)) as server,
    ):
        client = make_client(load_settings({"redis_url": server.url}), client_name="bench:parent")
        pool = Pool(server.url, max(options.processes, FAIR_CLIENTS))
        try:
            pool.start()
            rounds, handoffs = Bench(pool, client, options).run()
            redis_version = str(client.info("server")["redis_version"])
        finally:
            pool.close()
            client.close()
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": _commit(),
        "rounds": options.rounds,
        "duration_s": options.duration,
        "processes": options.processes,
        "contended_limit": CONTENDED_LIMIT,
        "fair_clients": FAIR_CLIENTS,
        "fair_limit": FAIR_LIMIT,
        "fair_hold_s": FAIR_HOLD_S,
        "subjects": {
            name: {
                "label": PEERS[name].label,
                "version": PEERS[name].version(),
                "mutex": PEERS[name].mutex,
                "waits_by": PEERS[name].waits_by,
            }
            for name in options.subjects
        },
        "retry_interval_s": RETRY_INTERVAL_S,
        "redis_version": redis_version,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "python": platform.python_version(),
        "redis_py": redis.__version__,
    }
    summary = summarize(rounds)
    print(render(meta, summary, handoffs))
    if options.out is not None:
        write_json(options.out, meta, summary, rounds, handoffs)
        print(f"results written to {options.out}")
    return 0
