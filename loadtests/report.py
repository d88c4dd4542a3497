"""The report of a run: summary.json, junit.xml, the terminal table, a baseline comparison.

Exit codes, the same in summary.json (`exit_code`) and from `python -m loadtests`:
0 every judged invariant holds and every service level too; 1 an invariant is broken;
2 a service level is breached (an error budget, or latency with a healthy generator);
3 the run proves nothing: an invariant unknown, the generator saturated, or harness trouble.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import xml.etree.ElementTree as ET
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from loadtests.slo import Check
from loadtests.verdicts import FAIL, NOT_JUDGED, PASS, UNKNOWN, Verdict

EXIT_OK, EXIT_INVARIANT, EXIT_SLO, EXIT_UNKNOWN = 0, 1, 2, 3


def exit_code(verdicts: list[Verdict], checks: list[Check], trouble: list[str]) -> int:
    judged = [v for v in verdicts if v.status != NOT_JUDGED]
    if any(v.status == FAIL for v in judged):
        return EXIT_INVARIANT
    if any(c.kind == "errors" and c.held is False for c in checks):
        return EXIT_SLO  # errors are facts whatever the generator did
    # No data about the generator is not a healthy generator.
    generator_ok = all(c.held is True for c in checks if c.kind == "generator")
    if trouble or not generator_ok or any(v.status == UNKNOWN for v in judged):
        return EXIT_UNKNOWN
    if any(c.held is False for c in checks):
        return EXIT_SLO
    return EXIT_OK


def machine_facts() -> dict[str, Any]:
    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in load] if load else None,
        "taskmon": installed("taskmon"),
        "locust": installed("locust"),
        "gunicorn": installed("gunicorn"),
        "redis_py": installed("redis"),
    }


def write_junit(path: Path, verdicts: list[Verdict], checks: list[Check]) -> None:
    """One test case per invariant and per service level: failure, skipped (unknown) or pass."""
    suite = ET.Element("testsuite", name="taskmon loadtest")
    failures = skipped = 0
    for verdict in verdicts:
        case = ET.SubElement(
            suite, "testcase", classname="invariants", name=f"{verdict.invariant} {verdict.name}"
        )
        text = f"{verdict.rule}: {verdict.measured} (limit {verdict.limit})"
        if verdict.status == FAIL:
            failures += 1
            failure = ET.SubElement(case, "failure", message=text)
            failure.text = "\n".join(verdict.examples)
        elif verdict.status in (UNKNOWN, NOT_JUDGED):
            skipped += 1
            ET.SubElement(case, "skipped", message=f"{verdict.status}: {verdict.note or text}")
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname=f"slo.{check.kind}", name=check.name)
        text = f"measured {check.measured}, limit {check.limit}"
        if check.held is False:
            failures += 1
            ET.SubElement(case, "failure", message=text)
        elif check.held is None:
            skipped += 1
            ET.SubElement(case, "skipped", message=f"no data: {text}")
    suite.set("tests", str(len(verdicts) + len(checks)))
    suite.set("failures", str(failures))
    suite.set("skipped", str(skipped))
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


MARK = {PASS: "PASS", FAIL: "FAIL", UNKNOWN: "UNKNOWN", NOT_JUDGED: "-"}


def verdict_table(verdicts: list[Verdict], checks: list[Check]) -> str:
    lines = [f"{'':4} {'invariant':14} {'verdict':8} measured (limit)"]
    for v in verdicts:
        lines.append(
            f"{v.invariant:4} {v.name:14} {MARK[v.status]:8} {v.measured} (limit {v.limit})"
        )
        lines.extend(f"{'':28}e.g. {example}" for example in v.examples[:3])
        if v.note and v.status != PASS:
            lines.append(f"{'':28}{v.note}")
    breached = [c for c in checks if c.held is False]
    unjudged = [c for c in checks if c.held is None]
    lines.append(
        f"service levels: {len(checks) - len(breached) - len(unjudged)} held, "
        f"{len(breached)} breached, {len(unjudged)} without data"
    )
    lines.extend(f"  BREACHED {c.name}: measured {c.measured}, limit {c.limit}" for c in breached)
    return "\n".join(lines)


def compare(summary: dict[str, Any], baseline_dir: Path) -> dict[str, Any]:
    """Per endpoint, this run's rps and percentiles against a baseline run's, as ratios."""
    try:
        baseline = json.loads((baseline_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {"baseline": str(baseline_dir), "error": f"cannot read its summary.json: {exc}"}
    rows = {}
    for name, now in summary["endpoints"].items():
        then = baseline.get("endpoints", {}).get(name)
        if not then:
            continue
        rows[name] = {
            key: {
                "now": now.get(key),
                "baseline": then.get(key),
                "ratio": round(now[key] / then[key], 3) if now.get(key) and then.get(key) else None,
            }
            for key in ("rps", "p50_ms", "p95_ms", "p99_ms")
        }
    verdicts = {
        v["invariant"]: {"now": v["status"], "baseline": b["status"]}
        for v in summary["invariants"]
        for b in baseline.get("invariants", [])
        if b["invariant"] == v["invariant"]
    }
    return {"baseline": str(baseline_dir), "endpoints": rows, "invariants": verdicts}


def comparison_table(comparison: dict[str, Any]) -> str:
    if "error" in comparison:
        return f"baseline {comparison['baseline']}: {comparison['error']}"
    lines = [f"against {comparison['baseline']} (now / baseline):"]
    for name, row in comparison["endpoints"].items():
        cells = [
            f"{key} {row[key]['ratio']}x"
            for key in ("rps", "p50_ms", "p99_ms")
            if row[key]["ratio"]
        ]
        lines.append(f"  {name}: {', '.join(cells)}")
    changed = [k for k, v in comparison["invariants"].items() if v["now"] != v["baseline"]]
    lines.append(f"  invariants changed: {', '.join(changed) or 'none'}")
    return "\n".join(lines)
