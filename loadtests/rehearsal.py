"""`python -m loadtests.rehearsal` (what `nox -s rehearsal` runs): a gray release, rehearsed.

Two instances (hosts) of `gunicorn -w N` share one Redis and take steady Locust load while the
rehearsal moves them, one at a time, from memory mode to Redis mode and back:

  both memory | canary to redis | mixed | second to redis | both redis
  | second back to memory | mixed | canary back to memory | both memory

Each switch is what an operator does to a live host: rewrite the file TASKMON_ENV_FILE names
and send the gunicorn master SIGHUP; it forks workers with the new settings and lets the old
ones finish what they hold. A switch is over when every old worker has exited and every new
one has answered /api/monitor/stats (what the monitor page shows) with the new backend.

The verdict is rehearsal_judge.py's; the report goes to reports/rehearsal/<run>/, beside the
load reports, with the same exit codes (0 pass, 1 broken, 3 unknown or harness trouble).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import redis

from loadtests.driving import (
    STOPPING,
    LoadPlan,
    Sampler,
    interrupts_as_keyboard,
    run_locust,
    sweep,
)
from loadtests.evidence import Evidence, SweepResult, read_records
from loadtests.rehearsal_judge import report_rehearsal
from loadtests.rehearsal_timeline import (
    INSTANCE_NAMES,
    MEMORY,
    REDIS,
    STEPS,
    Generation,
    Phase,
    SwitchRecord,
    Timeline,
    pid_of,
)
from loadtests.report import EXIT_UNKNOWN
from loadtests.stack import StackOptions, instance_env
from taskmon.harness.client import TERMINAL
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.stack import GunicornInstance
from taskmon.redis.keys import Keys
from taskmon.redis.monitor import load_task

# gunicorn's graceful_timeout (30 s) for the old workers, and room for the new ones to boot.
SWITCH_TIMEOUT_S = 75.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nox -s rehearsal --", description=__doc__)
    parser.add_argument("--hold", type=float, default=20.0, help="seconds of each hold phase")
    parser.add_argument("--users", type=int, default=12, help="steady Locust users")
    parser.add_argument("--workers", type=int, default=4, help="workers per instance")
    parser.add_argument("--limit", type=int, default=4, help="TASKMON_CONCURRENCY_LIMIT")
    parser.add_argument("--engine", choices=("tone", "espeak"), default="tone")
    parser.add_argument("--tone-ms-per-char", type=int, default=10)
    parser.add_argument("--drain", type=float, default=60.0, help="seconds the sweep may wait")
    parser.add_argument("--out", type=Path, default=Path("reports/rehearsal"))
    args = parser.parse_args(argv)
    for name in ("hold", "users", "workers", "limit", "drain"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return args


class Host:
    """One instance and the settings file its master re-reads at every SIGHUP."""

    def __init__(self, index: int, instance: GunicornInstance, env_file: Path) -> None:
        self.index = index
        self.name = INSTANCE_NAMES[index]
        self.instance = instance
        self.env_file = env_file

    def write_backend(self, backend: str) -> None:
        # Written whole then renamed: the master never reads half a file.
        part = self.env_file.with_suffix(".part")
        part.write_text(f"TASKMON_BACKEND={backend}\n", encoding="utf-8")
        os.replace(part, self.env_file)

    def hang_up(self) -> None:
        process = self.instance.process
        if process is None or not process.alive():
            raise RuntimeError(f"the {self.name} instance is not running")
        process.process.send_signal(signal.SIGHUP)


def wait_for_generation(
    host: Host, backend: str, old: frozenset[int], sampler: Sampler, deadline: float
) -> tuple[frozenset[int], float]:
    """Until no old worker is left and every new one answered with `backend`: (pids, when
    the old ones were all gone). Raises TimeoutError at `deadline`."""
    workers = host.instance.workers
    old_gone: float | None = None
    answered: dict[int, str] = {}
    while time.monotonic() < deadline and not STOPPING.is_set():
        pids = frozenset(host.instance.worker_pids())
        if old_gone is None and len(pids) == workers and not pids & old:
            old_gone = time.monotonic()
        with contextlib.suppress(OSError, KeyError, TypeError, ValueError):
            sample = sampler.sample(host.instance.base_url)
            sampler.samples.append(sample)  # the judge checks these too
            pid = pid_of(sample.worker)
            if pid is not None and sample.backend is not None:
                answered[pid] = sample.backend
        if old_gone is not None and all(answered.get(pid) == backend for pid in pids):
            return pids, old_gone
        time.sleep(0.05)
    raise TimeoutError(
        f"the {host.name} instance: workers {sorted(host.instance.worker_pids())} not all on "
        f"{backend} within {SWITCH_TIMEOUT_S:.0f} s (answers: {answered})"
    )


def hold(timeline: Timeline, backends: list[str], start: float, seconds: float) -> None:
    """Keep the load on for `seconds`; the phase is recorded even when Ctrl-C cuts it."""
    try:
        if STOPPING.wait(seconds):
            raise KeyboardInterrupt
    finally:
        timeline.phases.append(
            Phase(_hold_name(backends), start, time.monotonic(), tuple(backends))
        )


def rehearse(
    hosts: list[Host], sampler: Sampler, timeline: Timeline, args: argparse.Namespace
) -> None:
    """The holds and switches, each recorded in the timeline as it happens."""
    backends = [MEMORY] * len(hosts)
    generations = {host.index: timeline.generations[host.index] for host in hosts}
    start = time.monotonic()
    for step in STEPS:
        hold(timeline, backends, start, args.hold)
        host = hosts[step.instance]
        print(f"  {step.name}: rewriting {host.env_file.name}, SIGHUP", flush=True)
        old = generations[step.instance]
        record = SwitchRecord(step.name, step.instance, step.backend, time.monotonic())
        timeline.switches.append(record)
        host.write_backend(step.backend)
        host.hang_up()
        try:
            pids, record.old_gone = wait_for_generation(
                host, step.backend, old.pids, sampler, record.signalled + SWITCH_TIMEOUT_S
            )
        except BaseException as exc:
            record.trouble = f"{type(exc).__name__}: {exc}"
            # Whatever was forked by now is this step's: the judge must know whose pids they are.
            forked = frozenset(host.instance.worker_pids()) - old.pids
            timeline.generations.append(
                Generation(step.instance, step.backend, forked, record.signalled)
            )
            raise
        finally:
            timeline.phases.append(
                Phase(step.name, record.signalled, time.monotonic(), tuple(backends), step.instance)
            )
        record.settled = start = time.monotonic()
        old.gone = record.old_gone
        backends[step.instance] = step.backend
        generations[step.instance] = Generation(step.instance, step.backend, pids, record.signalled)
        timeline.generations.append(generations[step.instance])
        print(
            f"  {step.name}: done in {record.settled - record.signalled:.1f} s "
            f"(old workers gone after {record.old_gone - record.signalled:.1f} s)",
            flush=True,
        )
    hold(timeline, backends, start, args.hold)


def _hold_name(backends: list[str]) -> str:
    if len(set(backends)) == 1:
        return f"both {backends[0]}"
    return "mixed: " + ", ".join(f"{n} {b}" for n, b in zip(INSTANCE_NAMES, backends, strict=False))


@contextlib.contextmanager
def running_hosts(
    args: argparse.Namespace, workdir: Path
) -> Iterator[tuple[list[Host], str, str, Path]]:
    """Redis and the two instances, both in memory mode: (hosts, Redis URL, key prefix,
    journal dir). Everything is stopped on the way out."""
    journal_dir = workdir / "journal"
    journal_dir.mkdir(parents=True, exist_ok=True)
    options = StackOptions(
        instances=2,
        workers=args.workers,
        limit=args.limit,
        engine=args.engine,
        backend=MEMORY,
        tone_ms_per_char=args.tone_ms_per_char,
    )
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(RedisServer(workdir=workdir / "redis"))
        prefix = f"rehearsal-{uuid.uuid4().hex[:8]}"
        env = instance_env(options, journal_dir, server.url, prefix)
        hosts = []
        for index in range(2):
            directory = workdir / f"instance-{index + 1}"
            directory.mkdir(parents=True, exist_ok=True)
            env_file = directory / "taskmon.env"
            env_file.write_text(f"TASKMON_BACKEND={MEMORY}\n", encoding="utf-8")
            instance = GunicornInstance(
                workers=args.workers,
                env={**env, "TASKMON_ENV_FILE": str(env_file)},
                workdir=directory,
            )
            hosts.append(Host(index, stack.enter_context(instance), env_file))
        yield hosts, server.url, prefix, journal_dir


def read_from_redis(
    url: str, prefix: str, task_ids: list[str], drain_s: float
) -> dict[str, SweepResult]:
    """The state Redis holds for each task, read until each is done or failed (or the drain
    ends): tasks accepted in Redis mode, which memory-mode workers can no longer read."""
    keys = Keys(prefix)
    results = {task_id: SweepResult(task_id, None, None) for task_id in task_ids}
    deadline = time.monotonic() + drain_s
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
    try:
        pending = list(task_ids)
        while pending and time.monotonic() < deadline and not STOPPING.is_set():
            for task_id in pending:
                task = load_task(client, keys, task_id)
                found = results[task_id]
                found.statuses.append(200 if task is not None else 404)
                if task is not None:
                    found.state, found.worker = task.state.value, task.worker
            pending = [t for t in pending if results[t].state not in TERMINAL]
            if pending:
                time.sleep(0.5)
    finally:
        client.close()
    return results


def gather(  # noqa: PLR0917
    args: argparse.Namespace,
    run_dir: Path,
    run_id: str,
    evidence: Evidence,
    timeline: Timeline,
    trouble: list[str],
) -> None:
    """Start the hosts, rehearse under load, read every task's end; all stopped on return."""
    stop_file = run_dir / "stop-load"
    with running_hosts(args, run_dir / "stack") as (hosts, redis_url, prefix, journal_dir):
        evidence.journal_dir = journal_dir
        targets = timeline.urls = [host.instance.base_url for host in hosts]
        sampler = Sampler(targets, permits=False)
        now = time.monotonic()
        for host in hosts:
            pids, _ = wait_for_generation(
                host, MEMORY, frozenset(), sampler, now + SWITCH_TIMEOUT_S
            )
            timeline.generations.append(Generation(host.index, MEMORY, pids, now))
        sampler.start()
        # The load ends on the stop file; its length is only a bound, for a hung rehearsal.
        bound = (len(STEPS) + 1) * args.hold + len(STEPS) * SWITCH_TIMEOUT_S
        plan = LoadPlan("steady", args.users, bound, stop_file)
        outcome: dict[str, tuple[float, float, list[str]]] = {}
        locust = threading.Thread(
            target=lambda: outcome.setdefault(
                "locust", run_locust(plan, targets, run_dir, run_id, sampler)
            ),
            name="rehearsal-locust",
        )
        evidence.started_at = time.monotonic()
        locust.start()
        try:
            rehearse(hosts, sampler, timeline, args)
        finally:
            stop_file.touch()
            locust.join()
            sampler.stop()
            evidence.samples = sampler.samples
        _, evidence.ended_at, problems = outcome.get(
            "locust", (evidence.started_at, time.monotonic(), ["Locust did not report"])
        )
        trouble.extend(problems)
        evidence.records = read_records(run_dir / "records")
        by_backend: dict[str, list[str]] = {MEMORY: [], REDIS: []}
        alive = {g.instance: g for g in timeline.generations if g.gone is None}
        per_instance: dict[int, list[str]] = {host.index: [] for host in hosts}
        for task_id, first in evidence.accepted().items():
            generation = timeline.generation_of(first["worker"])
            if generation is None:
                continue  # the judge names such a task: its worker is no generation's
            by_backend[generation.backend].append(task_id)
            if generation.backend == MEMORY and alive.get(generation.instance) is generation:
                per_instance[generation.instance].append(task_id)
        print(
            f"  load over; reading {len(by_backend[REDIS])} Redis-mode tasks from Redis and "
            f"sweeping {sum(map(len, per_instance.values()))} of the live memory workers",
            flush=True,
        )
        evidence.sweep = read_from_redis(redis_url, prefix, by_backend[REDIS], args.drain)
        for index, task_ids in per_instance.items():
            evidence.sweep.update(sweep([hosts[index].instance.base_url], task_ids, args.drain))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_id = uuid.uuid4().hex[:6]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = (args.out / f"{stamp}-rehearsal-{run_id}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"rehearsal: 2 instances x {args.workers} workers, limit {args.limit}, {args.users} "
        f"users, holds of {args.hold:.0f} s; report in {run_dir}\n"
        "  (Locust's failures below include the 404s memory mode answers by design; the "
        "verdict counts failed calls itself: 5xx, connection errors, timeouts)",
        flush=True,
    )
    evidence = Evidence(limit=args.limit, workers=2 * args.workers)
    timeline = Timeline()
    trouble: list[str] = []
    with interrupts_as_keyboard():
        try:
            gather(args, run_dir, run_id, evidence, timeline, trouble)
        except KeyboardInterrupt:
            trouble.append("interrupted: the rehearsal stopped early, so its verdict is unknown")
        except Exception as exc:  # whatever broke, the report says so and the code is 3
            trouble.append(f"the rehearsal broke off: {type(exc).__name__}: {exc}")
        try:
            return report_rehearsal(args, run_dir, evidence, timeline, trouble)
        except Exception as exc:
            print(
                f"rehearsal: the evidence in {run_dir} could not be judged: {exc!r}",
                file=sys.stderr,
            )
            return EXIT_UNKNOWN


if __name__ == "__main__":
    sys.exit(main())
