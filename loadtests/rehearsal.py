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
import http.client
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
    ServerError,
    gather_then_report,
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
    Step,
    SwitchRecord,
    Timeline,
    pid_of,
)
from loadtests.shapes import CALL_TIMEOUT_S
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
    the old ones were all gone). Raises TimeoutError at `deadline`.

    Its own probes are not evidence: the judge reads only the sampler thread's samples, so a
    switch that settled here is still checked against what the workers said meanwhile.
    """
    workers = host.instance.workers
    old_gone: float | None = None
    answered: dict[int, str] = {}
    while time.monotonic() < deadline and not STOPPING.is_set():
        pids = frozenset(host.instance.worker_pids())
        if old_gone is None and len(pids) == workers and not pids & old:
            old_gone = time.monotonic()
        # A failed probe here only means "not settled yet": the sampler thread's own probes
        # are the evidence (R1, R3), and they run meanwhile.
        with contextlib.suppress(
            OSError, http.client.HTTPException, ServerError, KeyError, TypeError, ValueError
        ):
            sample = sampler.sample(host.instance.base_url)
            pid = pid_of(sample.worker)
            if pid is not None and sample.backend is not None:
                answered[pid] = sample.backend
        if old_gone is not None and all(answered.get(pid) == backend for pid in pids):
            return pids, old_gone
        time.sleep(0.05)
    if STOPPING.is_set():
        raise KeyboardInterrupt
    raise TimeoutError(
        f"the {host.name} instance: workers {sorted(host.instance.worker_pids())} not all on "
        f"{backend} within {SWITCH_TIMEOUT_S:.0f} s (answers: {answered})"
    )


class Rehearsal:
    """The holds and switches, each written into the timeline as it happens. Phases share
    their boundaries: a hold ends at the instant its switch begins, and the next hold begins
    at the instant the switch settled."""

    def __init__(self, hosts: list[Host], sampler: Sampler, timeline: Timeline) -> None:
        self.hosts = hosts
        self.sampler = sampler
        self.timeline = timeline
        self.backends = [MEMORY] * len(hosts)
        self.current = {g.instance: g for g in timeline.generations}

    def run(self, hold_s: float) -> None:
        start = time.monotonic()
        for step in STEPS:
            end = self.hold(start, hold_s)
            self.timeline.phases.append(self._hold_phase(start, end))
            start = self.switch(step, end)
        end = self.hold(start, hold_s)
        self.timeline.phases.append(self._hold_phase(start, end))

    def hold(self, start: float, seconds: float) -> float:
        """Keep the load on until `start + seconds`, watching for workers gunicorn replaces
        on its own (a crash, a timeout): they join their instance's current generation and
        are reported. The hold's end; a Ctrl-C records the hold cut short, then raises."""
        deadline = start + seconds
        while True:
            self._adopt_unplanned_workers()
            now = time.monotonic()
            if now >= deadline:
                return now
            try:
                stopped = STOPPING.wait(min(0.25, deadline - now))
            except KeyboardInterrupt:  # the signal handler raises from inside the wait
                stopped = True
            if stopped:
                self.timeline.phases.append(self._hold_phase(start, time.monotonic()))
                raise KeyboardInterrupt

    def switch(self, step: Step, hold_end: float) -> float:
        host = self.hosts[step.instance]
        old = self.current[step.instance]
        record = SwitchRecord(step.name, step.instance, step.backend, hold_end)
        self.timeline.switches.append(record)
        host.write_backend(step.backend)
        host.hang_up()
        print(f"  {step.name}: {host.env_file.name} rewritten, SIGHUP sent", flush=True)
        switching = tuple(self.backends)
        try:
            pids, record.old_gone = wait_for_generation(
                host, step.backend, old.pids, self.sampler, hold_end + SWITCH_TIMEOUT_S
            )
        except BaseException as exc:
            record.trouble = f"{type(exc).__name__}: {exc}"
            # Whatever was forked by now is this step's: the judge must know whose pids they are.
            forked = frozenset(host.instance.worker_pids()) - old.pids
            self.timeline.generations.append(
                Generation(step.instance, step.backend, forked, hold_end)
            )
            self.timeline.phases.append(
                Phase(step.name, hold_end, time.monotonic(), switching, step.instance)
            )
            raise
        record.settled = time.monotonic()
        self.timeline.phases.append(
            Phase(step.name, hold_end, record.settled, switching, step.instance)
        )
        old.gone = record.old_gone
        self.backends[step.instance] = step.backend
        self.current[step.instance] = Generation(step.instance, step.backend, pids, hold_end)
        self.timeline.generations.append(self.current[step.instance])
        print(
            f"  {step.name}: done in {record.settled - hold_end:.1f} s "
            f"(old workers gone after {record.old_gone - hold_end:.1f} s)",
            flush=True,
        )
        return record.settled

    def _hold_phase(self, start: float, end: float) -> Phase:
        return Phase(_hold_name(self.backends), start, end, tuple(self.backends))

    def _adopt_unplanned_workers(self) -> None:
        for host in self.hosts:
            generation = self.current[host.index]
            known = {pid for g in self.timeline.generations for pid in g.pids}
            for pid in set(host.instance.worker_pids()) - known:
                generation.pids = generation.pids | {pid}
                self.timeline.unplanned.append((time.monotonic(), host.index, pid))
                print(f"  the {host.name} instance replaced a worker on its own: pid {pid}")


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
        # Probes wait as long as the users' calls do: a switch makes both wait for new workers.
        sampler = Sampler(targets, permits=False, timeout_s=CALL_TIMEOUT_S)
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
            Rehearsal(hosts, sampler, timeline).run(args.hold)
        finally:
            # Load, then sampler, stopped before the stack, even when Ctrl-C lands in here.
            stop_file.touch()
            try:
                wait_out(locust)
            finally:
                sampler.stop()
                evidence.samples = list(sampler.samples)
                evidence.probe_failures = list(sampler.failures)
        _, evidence.ended_at, problems = outcome.get(
            "locust", (evidence.started_at, time.monotonic(), ["Locust did not report"])
        )
        trouble.extend(problems)
        evidence.records = read_records(run_dir / "records")
        evidence.sweep = read_every_end(hosts, timeline, evidence, redis_url, prefix, args.drain)


def wait_out(thread: threading.Thread) -> None:
    """Join `thread`; a Ctrl-C meanwhile (STOPPING is then set, so it ends soon) is held back
    until it has ended, and raised then."""
    interrupted = False
    while thread.is_alive():
        try:
            thread.join()
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        raise KeyboardInterrupt


def read_every_end(  # noqa: PLR0917
    hosts: list[Host],
    timeline: Timeline,
    evidence: Evidence,
    redis_url: str,
    prefix: str,
    drain_s: float,
) -> dict[str, SweepResult] | None:
    """Every accepted task's end where it can still be read: Redis-mode tasks in Redis,
    memory-mode ones on their instance if their worker lives. None when interrupted first:
    a partial sweep would read as tasks that never ended."""
    redis_tasks: list[str] = []
    alive = {g.instance: g for g in timeline.generations if g.gone is None}
    per_instance: dict[int, list[str]] = {host.index: [] for host in hosts}
    for task_id, first in evidence.accepted().items():
        generation = timeline.generation_of(first["worker"])
        if generation is None:
            continue  # the judge names such a task: its worker is no generation's
        if generation.backend == REDIS:
            redis_tasks.append(task_id)
        elif alive.get(generation.instance) is generation:
            per_instance[generation.instance].append(task_id)
    print(
        f"  load over; reading {len(redis_tasks)} Redis-mode tasks from Redis and sweeping "
        f"{sum(map(len, per_instance.values()))} of the live memory workers",
        flush=True,
    )
    found = read_from_redis(redis_url, prefix, redis_tasks, drain_s)
    for index, task_ids in per_instance.items():
        found.update(sweep([hosts[index].instance.base_url], task_ids, drain_s))
    return None if STOPPING.is_set() else found


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
    return gather_then_report(
        "rehearsal",
        "rehearsal",
        lambda trouble: gather(args, run_dir, run_id, evidence, timeline, trouble),
        lambda trouble: report_rehearsal(args, run_dir, evidence, timeline, trouble),
        run_dir,
    )


if __name__ == "__main__":
    sys.exit(main())
