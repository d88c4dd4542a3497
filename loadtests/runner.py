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
import json
import sys
import time
import urllib.parse
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests.driving import LoadPlan, Sampler, gather_then_report, run_locust, sweep
from loadtests.evidence import Evidence, read_records
from loadtests.report import (
    EXIT_UNKNOWN,
    compare,
    comparison_table,
    exit_code,
    machine_facts,
    verdict_table,
    write_junit,
)
from loadtests.shapes import SHAPES
from loadtests.slo import endpoint_stats, judge_slo, load_slo
from loadtests.stack import StackOptions, running_stack
from loadtests.verdicts import judge_all

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
    return gather_then_report(
        "loadtest",
        "run",
        lambda trouble: gather(args, options, run_dir, run_id, evidence, trouble),
        lambda trouble: judge_and_report(args, slo, run_dir, evidence, trouble),
        run_dir,
    )


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
