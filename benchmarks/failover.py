"""Failover: how long a worker takes to notice Redis is gone and to come back to it.

    python -m benchmarks.failover [--quick] [--out failover.json]

The figures come from the chaos harness (`python -m chaos`), which runs the real stack
(gunicorn -w 4 in Redis mode behind a fault proxy, Locust users) and times each worker from
its own log: detect is fault start to the worker saying it is degraded, re-promote is Redis
answering again to the worker being back on it. Each scenario runs under the partition policy;
the chaos run's own verdict on the scenario is kept with its figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .output import report

FULL = ("redis-down", "redis-blackhole", "redis-paused")
QUICK = ("redis-down",)


def run(scenarios: Sequence[str], out: Path) -> dict[str, Any]:
    argv = [sys.executable, "-m", "chaos", "--policy", "partition", "--out", str(out)]
    for name in scenarios:
        argv += ["--scenario", name]
    done = subprocess.run(argv, check=False, timeout=900, capture_output=True, text=True)
    found: dict[str, Any] = {"chaos_exit_code": done.returncode, "scenarios": {}}
    for name in scenarios:
        summaries = sorted(out.glob(f"*/{name}-partition/summary.json"))
        if not summaries:
            found["scenarios"][name] = {"status": "not run", "log_tail": done.stdout[-2000:]}
            continue
        report = json.loads(summaries[-1].read_text())
        figures = report.get("figures", {})
        found["scenarios"][name] = {
            "status": report["status"],
            "detect_s": figures.get("detect_s"),
            "repromote_s": figures.get("repromote_s"),
            "requests": figures.get("requests"),
            "five_xx": figures.get("five_xx"),
        }
    return found


def render(result: dict[str, Any]) -> str:
    lines = ["-- failover (chaos harness, partition policy; slowest worker)",
             f"  {'scenario':<18}{'detect s':>10}{'re-promote s':>14}  verdict"]  # fmt: skip
    for name, row in result["scenarios"].items():
        detect, back = row.get("detect_s"), row.get("repromote_s")
        lines.append(
            f"  {name:<18}{'n/a' if detect is None else f'{detect:.3f}':>10}"
            f"{'n/a' if back is None else f'{back:.3f}':>14}  {row['status']}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.failover", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="redis-down only")
    parser.add_argument("--out", type=Path)
    options = parser.parse_args(argv)
    scenarios = QUICK if options.quick else FULL
    with tempfile.TemporaryDirectory(prefix="taskmon-bench-failover-") as workdir:
        chaos_out = (options.out.parent / "chaos") if options.out else Path(workdir)
        result = run(scenarios, chaos_out)
    return report(render(result), result, options.out)


if __name__ == "__main__":
    sys.exit(main())
