"""HTTP under `gunicorn -w 4`: submit and status requests per second, Redis mode against
memory mode, the same stack and client side by side in one run.

    python -m benchmarks.http_modes [--rounds 3] [--duration 5] [--out http.json]

Each virtual user (asyncio, one process) submits a task, then reads its status, on fresh
connections (gunicorn hands each to any worker), again and again. The tone engine runs the
syntheses (0 ms per character: the figure is the bookkeeping, not the engine). In memory mode
a status read that lands on another worker answers 404, as it would for a client; it counts as
an answered request all the same. The modes alternate within each round.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskmon.harness.redis_server import RedisServer
from taskmon.harness.stack import GunicornInstance

from .output import report
from .sse.aio import request_json

HOST = "127.0.0.1"
USERS = 32


async def _load(port: int, duration_s: float) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    end = time.monotonic() + duration_s

    async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        try:
            return await request_json(HOST, port, method, path, body, timeout=10)
        except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            return 0, None  # counted as status 0: not an answer

    async def user(index: int) -> None:
        n = 0
        while time.monotonic() < end:
            status, body = await call("POST", "/api/tts", {"text": f"u{index} {n}"})
            statuses[status] += 1
            n += 1
            if status == 202 and isinstance(body, dict) and time.monotonic() < end:
                status, _ = await call("GET", f"/api/task/status/{body['task_id']}")
                statuses[status] += 1

    started = time.monotonic()
    await asyncio.gather(*(user(i) for i in range(USERS)))
    elapsed = time.monotonic() - started
    answered = sum(n for status, n in statuses.items() if 0 < status < 500)
    return {"requests_s": answered / elapsed, "statuses": dict(statuses)}


def run(rounds: int, duration_s: float, workdir: Path) -> dict[str, Any]:
    env = {"TASKMON_ENGINE": "tone", "TASKMON_TONE_MS_PER_CHAR": "0",
           "TASKMON_MAX_PENDING": "100000"}  # fmt: skip
    per_round: list[dict[str, Any]] = []
    with RedisServer(workdir=workdir / "redis") as server:
        stacks = {
            "redis": {**env, "TASKMON_BACKEND": "redis", "TASKMON_REDIS_URL": server.url},
            "memory": {**env, "TASKMON_BACKEND": "memory"},
        }
        for index in range(rounds):
            found: dict[str, Any] = {}
            order = list(stacks) if index % 2 == 0 else list(reversed(stacks))
            for mode in order:
                stack = GunicornInstance(
                    workers=4, env=stacks[mode], threads=32, workdir=workdir / f"{mode}-{index}"
                )
                with stack.start() as instance:
                    asyncio.run(_load(instance.port, min(1.0, duration_s)))  # warm every worker
                    found[mode] = asyncio.run(_load(instance.port, duration_s))
            found["ratio"] = found["redis"]["requests_s"] / found["memory"]["requests_s"]
            per_round.append(found)
            print(f"http round {index + 1}/{rounds} done", file=sys.stderr, flush=True)
    summary = {
        "redis_requests_s": statistics.median(r["redis"]["requests_s"] for r in per_round),
        "memory_requests_s": statistics.median(r["memory"]["requests_s"] for r in per_round),
        "ratio_redis_vs_memory": statistics.median(r["ratio"] for r in per_round),
        "users": USERS,
        "duration_s": duration_s,
    }
    return {"summary": summary, "rounds": per_round}


def render(result: dict[str, Any]) -> str:
    s = result["summary"]
    return "\n".join([
        f"-- HTTP under gunicorn -w 4 ({s['users']} users, submit then status, fresh "
        f"connections; medians)",
        f"  redis mode   {s['redis_requests_s']:>10,.0f} requests/s",
        f"  memory mode  {s['memory_requests_s']:>10,.0f} requests/s",
        f"  redis / memory {s['ratio_redis_vs_memory']:>8.3f}",
    ])  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http_modes", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s")
    parser.add_argument("--out", type=Path)
    options = parser.parse_args(argv)
    if options.quick:
        options.rounds, options.duration = 1, 2.0
    with tempfile.TemporaryDirectory(prefix="taskmon-bench-http-") as workdir:
        result = run(options.rounds, options.duration, Path(workdir))
    return report(render(result), result, options.out)


if __name__ == "__main__":
    sys.exit(main())
