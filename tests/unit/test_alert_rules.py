"""The alert rules in deploy/prometheus: promtool accepts them and their unit tests pass (each
alert fires on the series that should raise it, not before), when promtool is installed.
tests/e2e/test_metrics_e2e.py holds their metric names to a live stack's /metrics."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.scrapes import ALERT_RULES, promtool, rule_metric_names


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = promtool()
    if binary is None:
        pytest.skip("promtool not installed (TASKMON_TEST_PROMTOOL or PATH); .ci/run installs it")
    return subprocess.run([binary, *args], check=False, capture_output=True, text=True, timeout=60)


def test_promtool_checks_the_rules() -> None:
    checked = run_promtool("check", "rules", str(ALERT_RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_rules_unit_tests_pass() -> None:
    tested = run_promtool("test", "rules", str(ALERT_RULES.with_suffix(".test.yml")))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_the_docs_promise_is_there() -> None:
    assert set(rule_metric_names()) == {
        "TaskmonRedisUnreachable", "TaskmonWorkersDegraded", "TaskmonNoWorkersAlive",
        "TaskmonConcurrencySaturated", "TaskmonPermitWaitHigh", "TaskmonSuccessRateLow",
        "TaskmonTaskFailures", "TaskmonPermitsLost", "TaskmonOldestQueuedTaskOld",
        "TaskmonKeyCountGrowing",
    }  # fmt: skip


def test_a_broken_rule_file_fails_promtool(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(ALERT_RULES.read_text().replace("for: 1m", "for: one minute", 1))
    assert run_promtool("check", "rules", str(broken)).returncode != 0
