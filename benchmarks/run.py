"""`python -m benchmarks` (what `nox -s bench` runs): every suite, one report directory.

    python -m benchmarks [--quick] [--only semaphore,bookkeeping] [--out reports/bench]

Runs the suites one after the other (each starts its own redis-server, so none disturbs
another's figures), then writes reports/bench/<run>/: each suite's JSON, summary.json (the
machine, every headline figure against its target, each peer's figures) and the plots.
Targets are reported, met or missed; they never fail the run. The run fails only when a
suite does (a crash, a timeout), so CI can run `--quick` as a smoke.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import bookkeeping, failover, http_modes, output
from .semaphore import cli as semaphore_cli
from .sse import __main__ as sse_cli

SUITE_MAINS: dict[str, Callable[[Sequence[str]], int]] = {
    "semaphore": semaphore_cli.main,
    "bookkeeping": bookkeeping.main,
    "sse": sse_cli.main,
    "http": http_modes.main,
    "failover": failover.main,
}
SUITES = tuple(SUITE_MAINS)
TIMED = ("semaphore", "bookkeeping", "http")  # the suites that take --rounds and --duration


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run of every suite")
    parser.add_argument("--only", help=f"comma-separated suites (default all: {', '.join(SUITES)})")
    parser.add_argument("--out", type=Path, default=Path("reports/bench"), help="reports/bench")
    parser.add_argument("--rounds", type=int, help="rounds per suite (default 5; --quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per window (2; --quick 0.5)")
    parser.add_argument("--subjects", help="semaphore subjects (default: every one installed)")
    options = parser.parse_args(argv)
    options.suites = SUITES if options.only is None else tuple(options.only.split(","))
    for suite in options.suites:
        if suite not in SUITES:
            parser.error(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    return options


def _suite_args(options: argparse.Namespace, suite: str, out: Path) -> list[str]:
    args = ["--out", str(out)]
    if options.quick:
        args.append("--quick")
    if suite in TIMED:
        if options.rounds is not None:
            args += ["--rounds", str(options.rounds)]
        if options.duration is not None:
            args += ["--duration", str(options.duration)]
    if suite == "semaphore" and options.subjects:
        args += ["--subjects", options.subjects]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = options.out / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {}
    for suite in options.suites:
        out = run_dir / f"{suite}.json"
        SUITE_MAINS[suite](_suite_args(options, suite, out))
        results[suite] = json.loads(out.read_text())
    summary = {
        "run": stamp,
        "command": "nox -s bench" + (" -- --quick" if options.quick else ""),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
        },
        "targets": targets(results),
        "peers": results.get("semaphore", {}).get("peers", {}),
        "bookkeeping": results.get("bookkeeping", {}).get("summary", {}),
        "sse": results.get("sse", {}),
        "http": results.get("http", {}).get("summary", {}),
        "failover": results.get("failover", {}).get("scenarios", {}),
    }
    if "semaphore" in results:
        summary["semaphore_meta"] = results["semaphore"]["meta"]
    output.write_json(run_dir / "summary.json", summary)
    from .plots import plot_all  # noqa: PLC0415 - matplotlib only once there is something

    plots = plot_all(results, run_dir)
    print("\n" + render_targets(summary["targets"]))
    print(f"\nreport: {run_dir}/summary.json; plots: {', '.join(plots) or 'none'}")
    return 0


Targets = list[dict[str, Any]]


def _add(found: Targets, name: str, value: float | None, bound: str, met: bool | None) -> None:
    value = math.nan if value is None else float(value)
    found.append({"target": name, "value": value, "bound": bound,
                  "met": None if math.isnan(value) else met})  # fmt: skip


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def targets(results: dict[str, Any]) -> Targets:
    """Each target of the issue: the figure measured, the bound, met or not (None: unknown)."""
    found: Targets = []
    if "semaphore" in results:
        _semaphore_targets(found, results["semaphore"])
    book = results.get("bookkeeping")
    if book is not None:
        for peer in ("rq", "celery"):
            value = _nan(book["summary"].get(f"ratio.taskmon_vs_{peer}"))
            _add(found, f"task bookkeeping ÷ {peer}", value, ">= 2", value >= 2)
    if "sse" in results:
        _sse_targets(found, results["sse"])
    http = results.get("http")
    if http is not None:
        ratio = http["summary"]["ratio_redis_vs_memory"]
        _add(found, "HTTP requests/s, Redis mode ÷ memory mode", ratio, ">= 0.7", ratio >= 0.7)
    for name, row in results.get("failover", {}).get("scenarios", {}).items():
        detect, back = _nan(row.get("detect_s")), _nan(row.get("repromote_s"))
        _add(found, f"failover {name}: detect (s, slowest worker)", detect, "< 1", detect < 1)
        _add(found, f"failover {name}: re-promote (s, slowest worker)", back, "< 5", back < 5)
    return found


def _semaphore_targets(found: Targets, sem: dict[str, Any]) -> None:
    peers: dict[str, dict[str, float]] = sem["peers"]
    mine = peers.get("taskmon", {})
    others = {k: v for k, v in peers.items() if k != "taskmon"}
    of_two = _nan(mine.get("sem_1_of_two_rtt"))
    _add(found, "uncontended pair, 1 client, of two EVALSHA round trips", of_two, ">= 0.9",
         of_two >= 0.9)  # fmt: skip
    rates = [_nan(v.get("sem_1_ops_s")) for v in others.values()]
    best_peer = max((r for r in rates if not math.isnan(r)), default=math.nan)
    ours = _nan(mine.get("sem_1_ops_s"))
    _add(found, "uncontended pairs/s, 1 client, ÷ the best peer's", _div(ours, best_peer), "> 1",
         ours > best_peer)  # fmt: skip
    p50, p99 = _nan(mine.get("handoff_p50_ms")), _nan(mine.get("handoff_p99_ms"))
    _add(found, "handoff p50 (ms)", p50, "<= 1", p50 <= 1)
    _add(found, "handoff p99 (ms; nearest rank: the largest of 50)", p99, "<= 3", p99 <= 3)
    peer_p50 = [_nan(v.get("handoff_p50_ms")) for v in others.values()]
    best = min((b for b in peer_p50 if not math.isnan(b)), default=math.nan)
    _add(found, "handoff p50 ÷ the best peer's", _div(p50, best), "<= 1", p50 <= best)
    contended = _nan(mine.get("contended_vs_uncontended"))
    _add(found, "contended (8 processes, limit 2) ÷ uncontended (limit 8)", contended, ">= 0.6",
         contended >= 0.6)  # fmt: skip
    scripts = sem["summary"].get("sem_nc.taskmon.attempts_per_grant", {}).get("median")
    trips = math.nan if scripts is None else scripts + 1  # + the release that freed it
    _add(found, "round trips per contended grant (acquire scripts + 1 release)", trips, "<= 2",
         trips <= 2)  # fmt: skip
    jain = _nan(mine.get("jain"))
    _add(found, "fairness, Jain's index (16 clients, 4 permits)", jain, ">= 0.95", jain >= 0.95)
    fewest = _nan(mine.get("min_grants"))
    _add(found, "fairness, fewest grants of any client", fewest, "> 0", fewest > 0)


def _sse_targets(found: Targets, sse: dict[str, Any]) -> None:
    mine = sse["taskmon"]
    n, workers = sse["streams"], sse["workers"]
    served = mine["served_at_once"]
    _add(found, f"SSE: streams served at once of {n} on -w {workers}", served, f"= {n}",
         served == n)  # fmt: skip
    # Every connection counted, of any name: one opened per stream would show here.
    total = sum(mine["connections_peak"].values())
    bound = (2 + 64) * workers
    _add(found, "SSE: Redis connections at the peak, all kinds (2 + a 64 pool per worker)",
         total, f"<= {bound}", total <= bound)  # fmt: skip
    subs = mine["connections_peak"].get("subscriber", 0)
    _add(found, "SSE: subscriber connections per worker", subs / workers, "<= 2",
         subs <= 2 * workers)  # fmt: skip
    p99 = mine["delivery"].get("p99_ms", math.nan)
    _add(found, "SSE: delivery p99 (ms)", p99, "< 50", p99 < 50)


def _div(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def render_targets(found: list[dict[str, Any]]) -> str:
    lines = ["-- targets", f"  {'target':<62}{'measured':>10}  {'bound':<18}verdict"]
    for row in found:
        value = row["value"]
        shown = "n/a" if value is None or math.isnan(value) else f"{value:,.4g}"
        verdict = {True: "met", False: "MISSED", None: "-"}[row["met"]]
        lines.append(f"  {row['target']:<62}{shown:>10}  {row['bound']:<18}{verdict}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
