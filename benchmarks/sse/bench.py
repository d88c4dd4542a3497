"""SSE at scale: N streams open at once on `gunicorn -w 4`, taskmon against a flask-sse app.

taskmon: the permits are taken by the bench (straight in Redis, as a worker would), N tasks
are submitted and stay queued, and one stream per task is opened: every stream must get its
snapshot while all N are open. Then the permits go back, the tasks run, and each stream's
`running` and `done` events are timed from the moment the worker stamped them (the status's
started_at and finished_at) to their arrival. Redis connections are counted (CLIENT LIST) at
the peak, by kind: each worker's subscriber and its pool.

flask-sse: the same N streams on the same stack (gthread, the same threads), one channel
each; two events per channel are published at the rate taskmon's events came, each stamped
with its send time. flask-sse opens a Redis connection per stream, which is what it is
measured for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from taskmon.config import load_settings
from taskmon.harness.processes import ManagedProcess, free_port, wait_until
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.stack import GunicornInstance, http_get
from taskmon.ports import Holder
from taskmon.redis.connection import make_client
from taskmon.redis.keys import Keys
from taskmon.redis.semaphore import RedisSemaphore
from taskmon.redis.subscriber import RedisSubscriber

from .aio import Stream, hold_stream, request_json

HOST = "127.0.0.1"
LIMIT = 4
SUBMIT_PARALLEL = 32
OPEN_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 300.0


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}

    def at(q: float) -> float:  # nearest rank, as benchmarks.semaphore.stats.percentile
        return ordered[max(1, math.ceil(q * len(ordered))) - 1]

    return {"n": len(ordered), "p50_ms": at(0.5) * 1e3, "p99_ms": at(0.99) * 1e3,
            "max_ms": ordered[-1] * 1e3}  # fmt: skip


def connections(client: redis.Redis, own: set[str]) -> Counter[str]:
    """Open Redis connections by kind: subscriber, pool (by their client names), other."""
    kinds: Counter[str] = Counter()
    for entry in client.client_list():
        name = entry.get("name", "")
        if name in own:
            continue
        if name.startswith("taskmon-sub:"):
            kinds["subscriber"] += 1
        elif name.startswith("taskmon:"):
            kinds["pool"] += 1
        else:
            kinds["other"] += 1
    return kinds


@contextlib.contextmanager
def _held_permits(url: str) -> Iterator[list[Any]]:
    """All LIMIT permits of the service's semaphore, held by the bench until the block ends."""
    settings = load_settings({"redis_url": url})
    client = make_client(settings, client_name="bench:holder")
    sub = make_client(settings, client_name="bench:holder-sub", max_connections=2)
    subscriber = RedisSubscriber(sub)
    subscriber.start()
    sem = RedisSemaphore(client, Keys(settings.key_prefix), default_limit=LIMIT,
                         lease_ttl_s=RUN_TIMEOUT_S, subscriber=subscriber)  # fmt: skip
    try:
        leases = [
            sem.acquire(Holder("bench", f"hold-{n}"), timeout=30, token=uuid.uuid4().hex)
            for n in range(LIMIT)
        ]
        yield leases
    finally:
        sem.close()
        subscriber.close()
        sub.close()
        client.close()


async def _open_all(port: int, paths: list[str]) -> tuple[list[Stream], asyncio.Event, list[Any]]:
    stop = asyncio.Event()
    streams = [Stream() for _ in paths]
    tasks = [
        asyncio.ensure_future(hold_stream(HOST, port, path, stream, stop))
        for path, stream in zip(paths, streams, strict=True)
    ]
    return streams, stop, tasks


async def _wait_all(tasks: list[Any], timeout: float) -> None:
    """Wait for every task up to `timeout`, then cancel the rest: a stream that never got its
    headers (or its first event) counts as not served; it never hangs the run."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def _taskmon(url: str, port: int, n: int, probe: redis.Redis) -> dict[str, Any]:
    gate = asyncio.Semaphore(SUBMIT_PARALLEL)

    async def submit(index: int) -> str:
        async with gate:
            status, body = await request_json(HOST, port, "POST", "/api/tts",
                                              {"text": f"bench {index}"})  # fmt: skip
        if status != 202:
            raise RuntimeError(f"submission {index} answered {status}: {body}")
        return str(body["task_id"])

    with _held_permits(url) as leases:
        ids = await asyncio.gather(*(submit(i) for i in range(n)))
        opened_at = time.monotonic()
        streams, stop, tasks = await _open_all(port, [f"/api/task/stream/{i}" for i in ids])
        await _wait_all([asyncio.ensure_future(s.first.wait()) for s in streams], OPEN_TIMEOUT_S)
        open_s = time.monotonic() - opened_at
        served = sum(1 for s in streams if s.status == 200 and s.events and not s.ended)
        at_peak = connections(probe, {"bench:holder", "bench:holder-sub", "bench:probe"})
        for lease in leases:
            lease.release()
        peak = Counter(at_peak)
        started = time.monotonic()
        while not all(t.done() for t in tasks):
            if time.monotonic() - started > RUN_TIMEOUT_S:
                stop.set()
                break
            now = connections(probe, {"bench:holder", "bench:holder-sub", "bench:probe"})
            peak = Counter({k: max(peak[k], now[k]) for k in {*peak, *now}})
            await asyncio.sleep(0.25)
        run_s = time.monotonic() - started
        await _wait_all(tasks, 30)
    delays: list[float] = []
    kinds = Counter(event.event for stream in streams for event in stream.events)
    for stream in streams:
        for event in stream.events[1:]:
            if event.event != "state":
                continue  # `degraded`: the worker lost Redis meanwhile (counted in kinds)
            status = event.json()
            stamp = status.get("finished_at") if status["state"] in ("done", "failed") else (
                status.get("started_at"))  # fmt: skip
            if stamp is not None:
                delays.append(event.received_at - float(stamp))
    return {
        "streams": n,
        "served_at_once": served,
        "open_s": open_s,
        "per_worker": dict(Counter(s.worker for s in streams)),
        "errors": Counter(s.error for s in streams if s.error),
        "ended_done": sum(
            1
            for s in streams
            if s.events and s.events[-1].event == "state" and s.events[-1].json()["state"] == "done"
        ),
        "event_kinds": dict(kinds),
        "connections_with_streams_open": dict(at_peak),
        "connections_peak": dict(peak),
        "events": len(delays),
        "events_per_s": len(delays) / run_s if run_s else 0.0,
        "delivery": _percentiles(delays),
    }


async def _flask_sse(port: int, n: int, probe: redis.Redis, rate: float) -> dict[str, Any]:
    opened_at = time.monotonic()
    streams, stop, tasks = await _open_all(port, [f"/stream?channel=c{i}" for i in range(n)])
    channels = [f"c{i}" for i in range(n)]

    def all_subscribed() -> bool:
        counts = dict(probe.pubsub_numsub(*channels))
        return all(counts.get(c.encode(), counts.get(c, 0)) for c in channels)

    deadline = time.monotonic() + OPEN_TIMEOUT_S
    while not all_subscribed():
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    open_s = time.monotonic() - opened_at
    counts = dict(probe.pubsub_numsub(*channels))
    served = sum(1 for c in channels if counts.get(c.encode(), counts.get(c, 0)))
    at_peak = connections(probe, {"bench:probe"})
    interval = 1.0 / rate if rate > 0 else 0.0
    started = time.monotonic()
    for round_ in range(2):
        for i, channel in enumerate(channels):
            due = started + (round_ * n + i) * interval
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            probe.publish(channel, json.dumps({"data": {"sent_at": time.time()}, "type": "state"}))
    deadline = time.monotonic() + 30
    while sum(len(s.events) for s in streams) < 2 * served and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await _wait_all(tasks, 30)
    delays = [
        event.received_at - float(event.json()["sent_at"])
        for stream in streams
        for event in stream.events
    ]
    return {
        "streams": n,
        "served_at_once": served,
        "open_s": open_s,
        "per_worker": {},
        "errors": Counter(s.error for s in streams if s.error),
        "connections_with_streams_open": dict(at_peak),
        "events": len(delays),
        "events_per_s": rate,
        "delivery": _percentiles(delays),
    }


def run(n: int, threads: int, workdir: Path) -> dict[str, Any]:
    """Both stacks, one after the other, each on its own redis-server."""
    results: dict[str, Any] = {"streams": n, "threads": threads, "workers": 4}
    base_env = {"TASKMON_ENGINE": "tone", "TASKMON_TONE_MS_PER_CHAR": "1",
                "TASKMON_MAX_PENDING": str(n), "TASKMON_CONCURRENCY_LIMIT": str(LIMIT),
                "TASKMON_BACKEND": "redis",
                # Every thread may hold a stream: the bench measures streams, not API headroom.
                "TASKMON_THREADS": str(threads),
                "TASKMON_SSE_MAX_STREAMS": str(threads)}  # fmt: skip
    with RedisServer(workdir=workdir / "redis-taskmon") as server:
        env = {**base_env, "TASKMON_REDIS_URL": server.url}
        probe = redis.Redis.from_url(server.url, decode_responses=True, client_name="bench:probe")
        try:
            stack = GunicornInstance(workers=4, env=env, threads=threads, workdir=workdir / "tm")
            with stack.start() as instance:
                results["taskmon"] = asyncio.run(_taskmon(server.url, instance.port, n, probe))
        finally:
            probe.close()
    rate = max(50.0, results["taskmon"]["events_per_s"])
    with RedisServer(workdir=workdir / "redis-flask-sse") as server:
        probe = redis.Redis.from_url(server.url, decode_responses=True, client_name="bench:probe")
        port = free_port(HOST)
        process = ManagedProcess(
            [sys.executable, "-m", "gunicorn", "-w", "4", "-k", "gthread",
             "--threads", str(threads), "-b", f"{HOST}:{port}",
             "benchmarks.sse.peer_app:app"],
            env={**os.environ, "BENCH_REDIS_URL": server.url},
            log_path=workdir / "flask-sse.log",
            cwd=Path.cwd(),
        )  # fmt: skip
        try:
            wait_until(lambda: _answers(port), timeout=60, interval=0.05, what="flask-sse app")
            results["flask-sse"] = asyncio.run(_flask_sse(port, n, probe, rate))
        finally:
            process.stop()
            probe.close()
    return results


def _answers(port: int) -> bool:
    try:
        return http_get(f"http://{HOST}:{port}", "/healthz", timeout=1)[0] == 200
    except OSError:
        return False


def main_run(n: int, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="taskmon-bench-sse-") as workdir:
        return run(n, threads, Path(workdir))
