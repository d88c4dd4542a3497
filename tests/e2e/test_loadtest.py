"""`python -m loadtests` end to end: a real stack under Locust, judged from the outside.

The negative case is the point: memory mode under `gunicorn -w 4` keeps four monitors and four
semaphores, so a checker that cannot flag it proves nothing. Both runs are short (the shape
scaled to 15 s); `nox -s loadtest` runs the full smoke shape.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from loadtests.report import EXIT_INVARIANT, EXIT_OK

from tests.support.reports import run_report_command

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


def run_loadtest(out: Path, *options: str) -> tuple[int, dict[str, Any]]:
    argv = [sys.executable, "-m", "loadtests", "--duration", "15", "--users", "8",
            "--out", str(out), *options]  # fmt: skip
    report = run_report_command(argv, out, timeout_s=240)
    return report.code, report.summary


def verdicts(summary: dict[str, Any]) -> dict[str, str]:
    return {v["invariant"]: v["status"] for v in summary["invariants"]}


def test_memory_mode_under_four_workers_fails_naming_the_cap_or_visibility(
    tmp_path: Path,
) -> None:
    code, summary = run_loadtest(tmp_path / "reports", "--backend", "memory")
    assert code == EXIT_INVARIANT, summary["trouble"]
    found = verdicts(summary)
    assert "fail" in (found["I1"], found["I2"]), found
    failed = [v for v in summary["invariants"] if v["status"] == "fail"]
    assert all(v["examples"] for v in failed), "every failure names examples"
    assert summary["exit_code"] == EXIT_INVARIANT


def test_redis_mode_passes_every_invariant_it_judges_and_leaves_the_report(
    tmp_path: Path,
) -> None:
    code, summary = run_loadtest(tmp_path / "reports")
    found = verdicts(summary)
    assert code == EXIT_OK, (found, summary["trouble"], summary["service_levels"])
    assert {found[i] for i in ("I1", "I2", "I3", "I4", "I5", "I7")} == {"pass"}
    assert summary["concurrency"]["peak"] <= summary["concurrency"]["limit"]
    assert summary["tasks"]["accepted"] > 0
    (run_dir,) = (tmp_path / "reports").iterdir()
    for name in ("in_flight.png", "queue_depth.png", "latency.png", "locust.html", "junit.xml"):
        assert (run_dir / name).stat().st_size > 0, name
    assert (run_dir / "locust_stats.csv").read_text().count("\n") > 2
