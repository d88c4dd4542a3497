"""Running a reporting command (`python -m loadtests`, `python -m loadtests.rehearsal`) as a
user would, and reading back the one report it wrote."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from taskmon.harness.processes import ManagedProcess

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Report:
    code: int
    run_dir: Path
    summary: dict[str, Any]
    log_tail: str


def run_report_command(argv: list[str], out: Path, *, timeout_s: float) -> Report:
    """Run `argv` (which writes one run directory under `out`) from the project root, in a
    process group of its own, stopped on every path; fail the test if it does not finish."""
    process = ManagedProcess(argv, log_path=out.parent / f"{out.name}.log", cwd=ROOT,
                             env=os.environ.copy())  # fmt: skip
    try:
        code = process.process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(argv[1:3])} did not finish:\n" + process.log_tail())
    finally:
        process.stop()
    (run_dir,) = out.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    return Report(code, run_dir, summary, process.log_tail(60))
