"""`python -m loadtests` (what `nox -s loadtest` runs): a stack under load, then the verdict.

It starts the stack (stack.py) unless --target names a running deployment, runs Locust
headless on loadtests/locustfile.py in a process of its own, samples every instance's stats
and permits meanwhile, sweeps every accepted task to its end, stops the stack, and judges the
invariants and the service levels from what it gathered. It writes reports/loadtest/<run>/
and exits with the codes report.py lists. Ctrl-C stops everything and still writes what it has.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from loadtests.evidence import Evidence, Sample, SweepResult, read_records
from loadtests.report import (
    EXIT_UNKNOWN,
    compare,
    comparison_table,
    exit_code,
    machine_facts,
    verdict_table,
    write_junit,
)
from loadtests.shapes import SHAPES, STOP_FILE_ENV, TASK_DEADLINE_S
from loadtests.slo import endpoint_stats, judge_slo, load_slo
from loadtests.stack import StackOptions, running_stack
from loadtests.verdicts import judge_all
from taskmon.harness.client import TERMINAL, call
from taskmon.harness.processes import ManagedProcess

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
SAMPLE_EVERY_S = 0.5
PROGRESS_EVERY_S = 5.0
STOPPING = threading.Event()  # set on Ctrl-C: Locust, the sweep and its threads give up at once
EXIT_CODES = "0 pass, 1 invariant broken, 2 service level breached, 3 unknown or harness trouble"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="nox -s loadtest --", description=__doc__, epilog=f"exit codes: {EXIT_CODES}"
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smoke")
    parser.add_argument("--users", type=int, help="peak users (the shape keeps its form)")
    parser.add_argument("--duration", type=float, help="seconds of load (the shape scales)")
    parser.add_argument("--instances", type=int, default=1, help="gunicorn instances (hosts)")
    parser.add_argument("--workers", type=int, default=4, help="workers per instance")
    parser.add_argument("--limit", type=int, default=4, help="TASKMON_CONCURRENCY_LIMIT")
    parser.add_argument("--engine", choices=("tone", "espeak"), default="tone")
    parser.add_argument("--tone-ms-per-char", type=int, default=10)
    parser.add_argument("--backend", choices=("redis", "memory"), default="redis")
    parser.add_argument("--target", action="append", help="URL of a running deployment")
    parser.add_argument("--baseline", type=Path, help="a previous run's report directory")
    parser.add_argument("--slo", type=Path, help="tolerances (default loadtests/slo.toml)")
    parser.add_argument("--drain", type=float, default=90.0, help="seconds the sweep may wait")
    parser.add_argument("--out", type=Path, default=Path("reports/loadtest"))
    args = parser.parse_args(argv)
    for url in args.target or []:
        parsed = urllib.parse.urlsplit(url)
        if (
            parsed.scheme != "http"
            or not parsed.hostname
            or not parsed.port
            or parsed.path.strip("/")
        ):
            parser.error(f"--target {url}: give http://HOST:PORT (https is not supported yet)")
    for name in ("users", "duration", "instances", "workers", "limit"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name} must be positive")
    return args


class Sampler(threading.Thread):
    """Reads every target's stats and permits every SAMPLE_EVERY_S, over fresh connections."""

    def __init__(self, targets: list[str], *, permits: bool) -> None:
        super().__init__(name="loadtest-sampler", daemon=True)
        self.targets = targets
        # The permit holders only judge I1 when there are no journals (--target): else they
        # would be one more Redis read per sample on the service under load, for nothing.
        self.permits = permits
        self.samples: list[Sample] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_EVERY_S):
            for base in self.targets:
                with contextlib.suppress(OSError, KeyError, TypeError, ValueError):
                    self.samples.append(self.sample(base))

    def sample(self, base: str) -> Sample:
        t = time.monotonic()
        stats = call(base, "GET", "/api/monitor/stats", timeout=2).body
        holders = None
        if self.permits:
            permits = call(base, "GET", "/api/monitor/permits", timeout=2).body
            if permits.get("worker") == stats["worker"]:  # both answers from one worker
                holders = permits["in_use"]
        return Sample(
            t=t,
            instance=base,
            worker=stats["worker"],
            backend=stats["backend"],
            queued=stats["counts"]["queued"],
            running=stats["counts"]["running"],
            in_use=stats["concurrency"]["in_use"],
            limit=stats["concurrency"]["limit"],
            holders=holders,
        )

    def in_use(self) -> int | str:
        """The permits in use at the latest sample, for the progress line."""
        return self.samples[-1].in_use if self.samples else "?"

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)


@dataclass(frozen=True)
class LoadPlan:
    """What Locust runs: a shape, rescaled, and a file whose creation ends it early."""

    shape: str
    users: int | None = None
    duration_s: float | None = None
    stop_file: Path | None = None


def run_locust(
    plan: LoadPlan, targets: list[str], run_dir: Path, run_id: str, sampler: Sampler
) -> tuple[float, float, list[str]]:
    """Locust, headless, to the shape's end; (start, end) monotonic times and any trouble."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "TASKMON_LOADTEST_TARGETS": ",".join(targets),
        "TASKMON_LOADTEST_SHAPE": plan.shape,
        "TASKMON_LOADTEST_RECORD_DIR": str(run_dir / "records"),
        "TASKMON_LOADTEST_RUN_ID": run_id,
    }
    if plan.users:
        env["TASKMON_LOADTEST_USERS"] = str(plan.users)
    if plan.duration_s:
        env["TASKMON_LOADTEST_DURATION_S"] = str(plan.duration_s)
    if plan.stop_file:
        env[STOP_FILE_ENV] = str(plan.stop_file)
    shape = SHAPES[plan.shape].scaled(plan.users, plan.duration_s)
    progress = run_dir / "progress.json"
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", targets[0], "--csv", str(run_dir / "locust"), "--csv-full-history",
        "--html", str(run_dir / "locust.html"), "--only-summary", "--exit-code-on-error", "0",
        # Users finish the task they are on (a poll, a stream) when the shape ends them.
        "--stop-timeout", str(int(TASK_DEADLINE_S) + 10),
        "--loglevel", "WARNING", "--taskmon-progress", str(progress),
    ]  # fmt: skip
    trouble: list[str] = []
    started = time.monotonic()
    locust = ManagedProcess(argv, env=env, log_path=run_dir / "locust.log", cwd=ROOT)
    try:
        deadline = started + shape.duration_s + TASK_DEADLINE_S + 60
        last_line = 0.0
        while locust.alive() and not STOPPING.is_set():
            if time.monotonic() > deadline:
                trouble.append(f"Locust ran past its shape's {shape.duration_s:.0f} s; stopped")
                break
            if time.monotonic() - last_line >= PROGRESS_EVERY_S:
                # A plan that ends on its stop file has no length to show, only a bound.
                planned = None if plan.stop_file else shape.duration_s
                print_progress(progress, started, planned, sampler.in_use())
                last_line = time.monotonic()
            time.sleep(0.2)
    finally:
        code = locust.stop()
    if code not in (0, None) and not trouble:
        trouble.append(f"Locust exited {code}: see {run_dir / 'locust.log'}\n{locust.log_tail(15)}")
    return started, time.monotonic(), trouble


def print_progress(
    progress: Path, started: float, duration_s: float | None, in_flight: object
) -> None:
    try:
        state = json.loads(progress.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = {}
    print(
        f"  {time.monotonic() - started:5.0f}{'' if duration_s is None else f'/{duration_s:.0f}'} s"
        f"  users {state.get('users', 0):3}  "
        f"{state.get('rps', 0.0):6.1f} rps  {state.get('requests', 0):6} requests  "
        f"{state.get('failures', 0):4} failures  in flight {in_flight}",
        flush=True,
    )


def sweep(targets: list[str], task_ids: list[str], drain_s: float) -> dict[str, SweepResult]:
    """Every accepted task, read until it is done or failed or the drain ends (I5)."""
    deadline = time.monotonic() + drain_s
    results = {task_id: SweepResult(task_id, None, None) for task_id in task_ids}

    def settle(index_and_id: tuple[int, str]) -> None:
        index, task_id = index_and_id
        found = results[task_id]
        turn = index
        while time.monotonic() < deadline and not STOPPING.is_set():
            base = targets[turn % len(targets)]
            turn += 1
            try:
                answer = call(base, "GET", f"/api/task/status/{task_id}", timeout=5)
            except (OSError, http.client.HTTPException, ValueError):
                time.sleep(0.2)
                continue
            found.statuses.append(answer.status)
            if answer.status == 200:
                found.state, found.worker = answer.body["state"], answer.body["worker"]
                if found.state in TERMINAL:
                    return
            time.sleep(0.1 if answer.status == 404 else 0.3)

    pool = ThreadPoolExecutor(max_workers=16)
    try:
        list(pool.map(settle, enumerate(task_ids)))
    finally:
        pool.shutdown(wait=True, cancel_futures=STOPPING.is_set())
    return results


@contextlib.contextmanager
def interrupts_as_keyboard() -> Iterator[None]:
    """Ctrl-C and SIGTERM (a CI runner's cancel) interrupt the run once; while the teardown
    that follows stops the processes, further signals are ignored so it can finish."""

    def raise_once(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        STOPPING.set()
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, raise_once) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        slo = load_slo(args.slo)
    except ValueError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    run_id = uuid.uuid4().hex[:6]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    label = "target" if args.target else args.backend
    run_dir = (args.out / f"{stamp}-{args.shape}-{label}-{run_id}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    options = StackOptions(
        instances=args.instances,
        workers=args.workers,
        limit=args.limit,
        engine=args.engine,
        backend=args.backend,
        tone_ms_per_char=args.tone_ms_per_char,
    )
    print(f"loadtest {args.shape}: report in {run_dir}", flush=True)
    evidence = Evidence(limit=args.limit, workers=args.instances * args.workers)
    trouble: list[str] = []
    with interrupts_as_keyboard():
        try:
            gather(args, options, run_dir, run_id, evidence, trouble)
        except KeyboardInterrupt:
            trouble.append("interrupted: the run stopped early, so its verdict is unknown")
        except Exception as exc:  # whatever broke, the report says so and the code is 3
            trouble.append(f"the run broke off: {type(exc).__name__}: {exc}")
        try:
            return judge_and_report(args, slo, run_dir, evidence, trouble)
        except Exception as exc:
            print(
                f"loadtest: the evidence in {run_dir} could not be judged: {exc!r}", file=sys.stderr
            )
            return EXIT_UNKNOWN


def gather(  # noqa: PLR0917
    args: argparse.Namespace,
    options: StackOptions,
    run_dir: Path,
    run_id: str,
    evidence: Evidence,
    trouble: list[str],
) -> None:
    """Run the load and collect the evidence; the stack is down when it returns."""
    with contextlib.ExitStack() as stack:
        if args.target:
            targets = [url.rstrip("/") for url in args.target]
        else:
            print(
                f"  starting {options.instances} instance(s) x {options.workers} workers, "
                f"{options.backend} mode, limit {options.limit}",
                flush=True,
            )
            instances = stack.enter_context(running_stack(options, run_dir / "stack"))
            targets = [instance.base_url for instance in instances]
            evidence.journal_dir = run_dir / "stack" / "journal"
        sampler = Sampler(targets, permits=evidence.journal_dir is None)
        sampler.start()
        stack.callback(sampler.stop)
        evidence.started_at = time.monotonic()  # replaced by Locust's own start when it returns
        try:
            plan = LoadPlan(args.shape, args.users, args.duration)
            evidence.started_at, evidence.ended_at, problems = run_locust(
                plan, targets, run_dir, run_id, sampler
            )
            trouble.extend(problems)
            evidence.records = read_records(run_dir / "records")
            accepted = list(evidence.accepted())
            print(f"  load over; sweeping {len(accepted)} accepted tasks", flush=True)
            evidence.sweep = sweep(targets, accepted, args.drain)
        finally:
            evidence.samples = sampler.samples
            evidence.ended_at = evidence.ended_at or time.monotonic()
    # The stack is stopped: every journal is complete.


def judge_and_report(
    args: argparse.Namespace,
    slo: dict[str, Any],
    run_dir: Path,
    evidence: Evidence,
    trouble: list[str],
) -> int:
    if not evidence.records:
        evidence.records = read_records(run_dir / "records")
    verdicts = judge_all(evidence, journals=evidence.journal_dir is not None)
    checks = judge_slo(evidence, slo)
    code = exit_code(verdicts, checks, trouble)
    seconds = max(evidence.ended_at - evidence.started_at, 0.0)
    stats = endpoint_stats(evidence.records)
    accepted = evidence.accepted()
    ends = Counter(result.state or "never found" for result in (evidence.sweep or {}).values())
    peak = next((v.counts.get("peak") for v in verdicts if v.invariant == "I1"), None)
    plots: list[str] = []
    try:
        from loadtests.plots import plot_all  # noqa: PLC0415 (matplotlib only when reporting)

        plots = plot_all(evidence, run_dir)
    except Exception as exc:  # a plot must never hide the verdict
        trouble.append(f"plots not drawn: {exc}")
    summary: dict[str, Any] = {
        "run": run_dir.name,
        "exit_code": code,
        "exit_codes": EXIT_CODES,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "seconds": round(seconds, 2),
        "requests": sum(e.requests for e in stats.values()),
        "failures": sum(e.requests - e.ok for e in stats.values()),
        "rps": round(sum(e.requests for e in stats.values()) / seconds, 2) if seconds else None,
        "endpoints": {name: entry.summary(seconds) for name, entry in sorted(stats.items())},
        "tasks": {"accepted": len(accepted), "ended": dict(ends)},
        "concurrency": {"limit": evidence.limit, "peak": peak},
        "invariants": [v.to_dict() for v in verdicts],
        "service_levels": [c.to_dict() for c in checks],
        "trouble": trouble,
        "plots": plots,
        "machine": machine_facts(),
    }
    if args.baseline:
        summary["comparison"] = compare(summary, args.baseline)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_junit(run_dir / "junit.xml", verdicts, checks)
    print(verdict_table(verdicts, checks))
    for problem in trouble:
        print(f"trouble: {problem}")
    if "comparison" in summary:
        print(comparison_table(summary["comparison"]))
    print(
        f"{summary['requests']} requests, {summary['rps']} rps, {len(accepted)} tasks accepted, "
        f"peak {peak} in flight of {evidence.limit}; exit {code} ({EXIT_CODES})\n"
        f"report: {run_dir}",
        flush=True,
    )
    return code
