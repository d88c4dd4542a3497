"""The chaos report: per scenario a summary.json and a plot; per run a summary.json, a JUnit
file and a table on the terminal.

Exit codes: 0 every scenario kept every promise, 1 a promise was broken, 3 a verdict is
unknown (a scenario broke off, was interrupted, or left too little evidence, or none ran). A
scenario the fault proxy cannot carry out (HTTP faults on a real Toxiproxy) is `skipped`, with
its reason, and counts neither way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from loadtests.report import machine_facts

from chaos.evidence import FAIL, PASS, SKIPPED, UNKNOWN, ChaosEvidence, Check
from chaos.judge import judge
from chaos.scenarios import Scenario

EXIT_PASS, EXIT_BROKEN, EXIT_UNKNOWN = 0, 1, 3
EXIT_CODES = "0 every promise kept, 1 a promise broken, 3 unknown or harness trouble"


def scenario_status(checks: list[Check], trouble: list[str]) -> str:
    if any(check.status == FAIL for check in checks):
        return FAIL
    if trouble or any(check.status == UNKNOWN for check in checks) or not checks:
        return UNKNOWN
    return PASS


def report_scenario(
    out: Path, evidence: ChaosEvidence, trouble: list[str], extra: dict[str, Any]
) -> dict[str, Any]:
    """Judge one scenario run, write its summary and plot, print its verdict; its summary."""
    try:
        checks = judge(evidence)
    except Exception as exc:  # a judge that breaks must not hide the rest of the run
        checks = []
        trouble.append(f"the evidence could not be judged: {type(exc).__name__}: {exc}")
    plots: list[str] = []
    try:
        from chaos.plots import plot_scenario  # noqa: PLC0415 (matplotlib only when reporting)

        plots = plot_scenario(evidence, out)
    except Exception as exc:  # a plot must never hide the verdict
        trouble.append(f"plot not drawn: {exc}")
    status = scenario_status(checks, trouble)
    figures = headline(checks)
    summary: dict[str, Any] = {
        "scenario": evidence.scenario.name,
        "policy": evidence.policy,
        "summary": evidence.scenario.summary,
        "expectations": list(evidence.scenario.expectations),
        "status": status,
        "figures": figures,
        "checks": [check.to_dict() for check in checks],
        "steady_state": [step.to_dict() for step in evidence.steps],
        "faults": [window.to_dict() for window in evidence.windows],
        "victim": evidence.victim,
        "trouble": trouble,
        "plots": plots,
        **extra,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    for check in checks:
        where = f"  [{check.where}]" if check.where and check.status != PASS else ""
        print(f"  {check.status:7} {check.name:16} {check.measured}{where}", flush=True)
    for problem in trouble:
        print(f"  trouble: {problem}", flush=True)
    print(f"  => {status}", flush=True)
    return summary


def skipped_scenario(out: Path, scenario: Scenario, policy: str, why: str) -> dict[str, Any]:
    """A scenario not run on this fault proxy: its summary says why; no verdict either way."""
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "scenario": scenario.name, "policy": policy, "summary": scenario.summary,
        "expectations": list(scenario.expectations), "status": SKIPPED, "skipped": why,
        "figures": headline([]), "checks": [], "trouble": [],
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n== {scenario.name} ({policy}): skipped: {why}", flush=True)
    return summary


def headline(checks: list[Check]) -> dict[str, Any]:
    """The figures the run's table and the issue ask for, from the checks."""
    by_name = {check.name: check.figures for check in checks}
    calls = by_name.get("no failed call", {})
    tasks = by_name.get("no task lost", {})
    cap = by_name.get("cap", {})
    return {
        "requests": calls.get("calls"),
        "five_xx": calls.get("five_xx"),
        "failed_calls": calls.get("failed"),
        "accepted": tasks.get("accepted"),
        "ended": tasks.get("ended"),
        "lost": tasks.get("lost"),
        "peak": cap.get("peak"),
        "bound": cap.get("bound"),
        "seconds_above_limit": cap.get("seconds_above_limit"),
        "detect_s": by_name.get("detect", {}).get("max_s"),
        "repromote_s": by_name.get("re-promote", {}).get("max_s"),
        "log_lines_per_outage": by_name.get("log", {}).get("per_worker_per_outage"),
    }


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def report_run(run_dir: Path, results: list[dict[str, Any]], *, stopped: bool) -> int:
    statuses = [result["status"] for result in results if result["status"] != SKIPPED]
    if FAIL in statuses:
        code = EXIT_BROKEN
    elif stopped or not statuses or UNKNOWN in statuses:
        code = EXIT_UNKNOWN
    else:
        code = EXIT_PASS
    summary = {
        "run": run_dir.name,
        "exit_code": code,
        "exit_codes": EXIT_CODES,
        "scenarios": [
            {
                k: r[k]
                for k in ("scenario", "policy", "status", "figures", "trouble", "skipped")
                if k in r
            }
            for r in results
        ],
        "machine": machine_facts(),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    write_junit(run_dir / "junit.xml", results)
    header = ("scenario", "policy", "verdict", "calls", "5xx", "failed", "accepted", "lost",
              "peak/bound", "detect s", "re-promote s", "log/outage")  # fmt: skip
    rows = [header]
    for r in results:
        f = r["figures"]
        rows.append((
            r["scenario"], r["policy"], r["status"], _cell(f["requests"]), _cell(f["five_xx"]),
            _cell(f["failed_calls"]), _cell(f["accepted"]), _cell(f["lost"]),
            f"{_cell(f['peak'])}/{_cell(f['bound'])}", _cell(f["detect_s"]),
            _cell(f["repromote_s"]), _cell(f["log_lines_per_outage"]),
        ))  # fmt: skip
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    print()
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(f"\nexit {code} ({EXIT_CODES})\nreport: {run_dir}", flush=True)
    return code


def write_junit(path: Path, results: list[dict[str, Any]]) -> None:
    suite = ET.Element("testsuite", name="chaos", tests=str(len(results)))
    failures = 0
    for result in results:
        case = ET.SubElement(
            suite, "testcase", classname="chaos", name=f"{result['scenario']}[{result['policy']}]"
        )
        broken = [c for c in result["checks"] if c["status"] != PASS]
        if result["status"] == SKIPPED:
            ET.SubElement(case, "skipped", message=result.get("skipped", ""))
        elif result["status"] == FAIL or result["status"] == UNKNOWN:
            failures += 1
            tag = "failure" if result["status"] == FAIL else "error"
            text = "\n".join(f"{c['name']}: {c['measured']} {c['where']}" for c in broken)
            ET.SubElement(case, tag, message=result["status"]).text = (
                text + "\n" + "\n".join(result["trouble"])
            )
    suite.set("failures", str(failures))
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
