"""`python -m chaos` end to end: real Redis behind the fault proxy, real gunicorn -w 4, Locust.

A scenario must pass on the service as configured, and its checker must fail on a
configuration a user could choose where the promise is not kept: memory mode, where four
workers keep four caps and never know Redis went away. Faults shortened to 4 s; `nox -s
chaos` runs them at their full length.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.reports import run_report_command

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


def run_chaos(out: Path, *options: str) -> tuple[int, dict[str, Any]]:
    argv = [sys.executable, "-m", "chaos", "--fault-seconds", "4", "--users", "10",
            "--out", str(out), *options]  # fmt: skip
    report = run_report_command(argv, out, timeout_s=300)
    scenario_dirs = [d for d in report.run_dir.iterdir() if (d / "summary.json").is_file()]
    assert scenario_dirs, report.log_tail
    return report.code, report.summary


def checks_of(out: Path) -> dict[str, str]:
    """Each check's verdict in the run's one scenario report."""
    (run_dir,) = out.iterdir()
    (scenario,) = [d for d in run_dir.iterdir() if d.is_dir()]
    summary = json.loads((scenario / "summary.json").read_text())
    assert (scenario / "in-flight.png").is_file(), "the plot with the fault shaded"
    return {check["name"]: check["status"] for check in summary["checks"]}


def test_redis_down_keeps_every_promise(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    code, summary = run_chaos(out, "--scenario", "redis-down", "--policy", "partition")
    assert code == 0, summary
    found = checks_of(out)
    assert set(found) >= {"steady state", "no failed call", "no task lost", "ends kept", "cap",
                          "detect", "re-promote", "log"}, found  # fmt: skip
    assert set(found.values()) == {"pass"}, found
    (scenario,) = summary["scenarios"]
    figures = scenario["figures"]
    assert figures["five_xx"] == 0
    assert figures["lost"] == 0
    assert figures["accepted"] > 0
    assert figures["detect_s"] is not None
    assert figures["detect_s"] <= 1.0
    assert figures["peak"] <= figures["bound"]


def test_memory_mode_breaks_the_promises_and_the_checker_says_which(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    code, summary = run_chaos(out, "--scenario", "redis-down", "--policy", "partition",
                              "--set", "TASKMON_BACKEND=memory")  # fmt: skip
    assert code == 1, summary
    found = checks_of(out)
    assert found["cap"] == "fail", found  # four workers, four caps
    assert found["detect"] == "fail", found  # nothing notices Redis went away
    assert found["steady state"] == "fail", found
