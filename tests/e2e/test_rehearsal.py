"""`python -m loadtests.rehearsal` end to end, short: two real instances switched from memory
to Redis mode and back under Locust load, by SIGHUP and TASKMON_ENV_FILE, with no failed call.
`nox -s rehearsal` runs the same with longer holds and four workers per instance."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from loadtests.report import EXIT_OK

from tests.support.reports import run_report_command

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


def test_the_gray_release_and_its_rollback_pass_without_a_failed_call(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    argv = [sys.executable, "-m", "loadtests.rehearsal", "--hold", "6", "--users", "8",
            "--workers", "2", "--out", str(out)]  # fmt: skip
    report = run_report_command(argv, out, timeout_s=300)
    code, run_dir, summary = report.code, report.run_dir, report.summary
    assert code == EXIT_OK, report.log_tail
    assert summary["exit_code"] == EXIT_OK
    rules = {rule["invariant"]: rule for rule in summary["rules"]}
    assert {name: rule["status"] for name, rule in rules.items()} == dict.fromkeys(
        ("R1", "R2", "R3", "I1", "I2", "I3", "I4"), "pass"
    )
    assert rules["R1"]["counts"]["calls"] > 100
    # The both-Redis verdicts rest on data: syntheses, reads on other workers, contested keys.
    assert rules["I1"]["counts"]["syntheses_started"] > 0
    assert rules["I2"]["counts"]["on_other_workers"] > 0
    assert rules["I4"]["counts"]["keys_posted_more_than_once"] > 0
    assert rules["R3"]["counts"]["generations_unheard"] == 0
    timeline = summary["timeline"]
    assert [p["name"] for p in timeline["phases"] if p["switching"] is None] == [
        "both memory",
        "mixed: canary redis, second memory",
        "both redis",
        "mixed: canary redis, second memory",
        "both memory",
    ]
    assert all(s["settled"] is not None and s["trouble"] is None for s in timeline["switches"])
    # Six generations of workers, each pid in one only, on the backend of its step.
    generations = timeline["generations"]
    assert [(g["instance"], g["backend"]) for g in generations] == [
        (0, "memory"), (1, "memory"), (0, "redis"), (1, "redis"), (1, "memory"), (0, "memory"),
    ]  # fmt: skip
    pids = [pid for g in generations for pid in g["pids"]]
    assert len(pids) == len(set(pids)) == 12
    assert all(row["failed"] == 0 for row in summary["phases"])
    assert summary["cap_by_phase"]
    for plot in ("in_flight.png", "queue_depth.png", "latency.png"):
        assert (run_dir / plot).stat().st_size > 10_000
    assert (run_dir / "junit.xml").exists()
