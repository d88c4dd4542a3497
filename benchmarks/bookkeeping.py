"""Task bookkeeping per second: taskmon's monitor against RQ's job API and Celery's Redis
result backend, on one redis-server, side by side in one run.

    python -m benchmarks.bookkeeping [--rounds 5] [--duration 2] [--out bookkeeping.json]

One lifecycle is what the service records for a task: create it (queued), move it to
running, move it to done, read its status. Each system does that with its own public API:

- taskmon: RedisTaskMonitor.start, transition(RUNNING), transition(DONE), get; every write
  also keeps the state index and the counters and publishes the task's event;
- RQ: Queue.enqueue (saves the job and pushes it onto the queue), Job.set_status(STARTED),
  Job.set_status(FINISHED), Job.fetch(...).get_status(refresh=False). RQ's own worker does
  more per job (registries, heartbeats, a result): this is the least RQ can do, so its figure
  is a ceiling;
- Celery: the Redis backend's store_result(PENDING), store_result(STARTED),
  store_result(SUCCESS, result) and get_task_meta (cache off, as a status poll reads it).

One client in one process; the order rotates from round to round and every figure is also
given as a ratio to the plain EVALSHA round trip of the same round. Redis commands per
lifecycle come from INFO's total_commands_processed.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from taskmon.config import load_settings
from taskmon.domain import Task, TaskRequest, TaskState
from taskmon.harness.redis_server import RedisServer
from taskmon.redis.connection import make_client
from taskmon.redis.hub import RedisEventHub
from taskmon.redis.keys import Keys
from taskmon.redis.monitor import RedisTaskMonitor
from taskmon.redis.subscriber import RedisSubscriber

from .output import report

Lifecycle = Callable[[], object]
SYSTEMS = ("taskmon", "rq", "celery")


def _taskmon(url: str, stack: list[Callable[[], None]]) -> Lifecycle:
    settings = load_settings({"redis_url": url})
    client = make_client(settings, client_name="bench:bookkeeping")
    sub_client = make_client(settings, client_name="bench:bookkeeping-sub", max_connections=2)
    subscriber = RedisSubscriber(sub_client)
    subscriber.start()
    keys = Keys("bench-bookkeeping")
    hub = RedisEventHub(client, keys, subscriber, snapshot=lambda task_id: None)
    monitor = RedisTaskMonitor(client, keys, hub=hub, ttl_s=3600)
    stack += [client.close, sub_client.close, subscriber.close, monitor.close]
    request = TaskRequest("hello there")

    def lifecycle() -> object:
        now = time.time()
        task = Task.create(request, worker="bench", now=now)
        monitor.start(task)
        running = monitor.transition(
            task.task_id, expected_version=1, state=TaskState.RUNNING, now=now, known=task
        )
        assert running is not None  # noqa: S101 - a lost transition would void the figure
        monitor.transition(
            task.task_id, expected_version=2, state=TaskState.DONE, now=now, known=running
        )
        return monitor.get(task.task_id)

    return lifecycle


def _rq(url: str, stack: list[Callable[[], None]]) -> Lifecycle:
    from rq import Queue  # noqa: PLC0415 - installed in the bench session only
    from rq.job import Job, JobStatus  # noqa: PLC0415

    client = redis.Redis.from_url(url)
    stack.append(client.close)
    queue = Queue("bench", connection=client)

    def lifecycle() -> object:
        job = queue.enqueue(print, "hello there")
        job.set_status(JobStatus.STARTED)
        job.set_status(JobStatus.FINISHED)
        return Job.fetch(job.id, connection=client).get_status(refresh=False)  # one HGETALL

    return lifecycle


def _celery(url: str, stack: list[Callable[[], None]]) -> Lifecycle:
    from celery import Celery, states  # noqa: PLC0415 - installed in the bench session only

    app = Celery("bench", backend=url, broker="memory://")
    backend = app.backend
    stack.append(app.close)

    def lifecycle() -> object:
        task_id = uuid.uuid4().hex
        backend.store_result(task_id, None, states.PENDING)
        backend.store_result(task_id, None, states.STARTED)
        backend.store_result(task_id, {"path": "/results/x.wav"}, states.SUCCESS)
        return backend.get_task_meta(task_id, cache=False)["status"]

    return lifecycle


BUILDERS: dict[str, Callable[[str, list[Callable[[], None]]], Lifecycle]] = {
    "taskmon": _taskmon,
    "rq": _rq,
    "celery": _celery,
}


def _window(call: Callable[[], object], duration_s: float, client: redis.Redis) -> dict[str, float]:
    before = int(client.info("stats")["total_commands_processed"])
    done, end = 0, time.monotonic() + duration_s
    started = time.monotonic()
    while time.monotonic() < end:
        call()
        done += 1
    elapsed = time.monotonic() - started
    commands = int(client.info("stats")["total_commands_processed"]) - before - 1
    return {"ops_s": done / elapsed, "commands_per_op": commands / done if done else math.nan}


def run(url: str, rounds: int, duration_s: float, systems: Sequence[str]) -> dict[str, Any]:
    """Every round: the EVALSHA baseline and each system's lifecycles, in a rotated order."""
    stack: list[Callable[[], None]] = []
    probe = redis.Redis.from_url(url)
    stack.append(probe.close)
    try:
        trivial = probe.register_script("return 1")
        trivial()
        calls: dict[str, Callable[[], object]] = {"evalsha": trivial}
        calls |= {name: BUILDERS[name](url, stack) for name in systems}
        for call in calls.values():
            call()  # warm: scripts loaded, connections open
        names = list(calls)
        per_round: list[dict[str, float]] = []
        for index in range(rounds):
            order = names[index % len(names) :] + names[: index % len(names)]
            found: dict[str, float] = {}
            for name in order:
                metrics = _window(calls[name], duration_s, probe)
                found |= {f"{name}.{key}": value for key, value in metrics.items()}
            for name in systems:
                found[f"ratio.{name}_vs_evalsha"] = found[f"{name}.ops_s"] / found["evalsha.ops_s"]
                for peer in systems:
                    if peer != name and name == "taskmon":
                        found[f"ratio.taskmon_vs_{peer}"] = (
                            found["taskmon.ops_s"] / found[f"{peer}.ops_s"]
                        )
            per_round.append(found)
    finally:
        for close in reversed(stack):
            close()
    summary = {
        key: statistics.median(r[key] for r in per_round if not math.isnan(r[key]))
        for key in per_round[0]
    }
    return {"summary": summary, "rounds": per_round}


def render(result: dict[str, Any]) -> str:
    summary = result["summary"]
    lines = [
        "-- task bookkeeping (create, running, done, status read; 1 client; medians)",
        f"  {'system':<10}{'lifecycles/s':>14}{'of EVALSHA':>12}{'commands*':>10}{'taskmon ÷':>11}",
        f"  {'EVALSHA':<10}{summary['evalsha.ops_s']:>14,.0f}{1:>12.3f}"
        f"{summary['evalsha.commands_per_op']:>10.1f}",
    ]
    for name in SYSTEMS:
        if f"{name}.ops_s" not in summary:
            continue
        versus = summary.get(f"ratio.taskmon_vs_{name}", math.nan)
        lines.append(
            f"  {name:<10}{summary[f'{name}.ops_s']:>14,.0f}"
            f"{summary[f'ratio.{name}_vs_evalsha']:>12.3f}"
            f"{summary[f'{name}.commands_per_op']:>10.1f}"
            f"{'' if math.isnan(versus) else f'{versus:.2f}':>11}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bookkeeping", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true", help="1 round of 0.5 s")
    options = parser.parse_args(argv)
    if options.quick:
        options.rounds, options.duration = 1, 0.5
    with (
        tempfile.TemporaryDirectory(prefix="taskmon-bench-") as workdir,
        RedisServer(workdir=Path(workdir)) as server,
    ):
        result = run(server.url, options.rounds, options.duration, SYSTEMS)
    return report(render(result), result, options.out)


if __name__ == "__main__":
    raise SystemExit(main())
