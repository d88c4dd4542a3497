"""The HTTP faults' checks: what the retrying clients (loadtests/retrying.py) saw, against the
synthesis journals.

A try through the fault proxy may meet a fault the proxy made: a 5xx it answered itself
(X-Fault-Injected names the toxic) or an answer it held past the client's timeout, while a
fault window is open. Those are the proxy's, excused and counted; anything else failing is
the service's. Each key must end accepted, with one task whatever the number of tries; and no
synthesis may run that no client was given, since that is a retry after a lost answer run
a second time (the journals know every synthesis; the answers, and the steady-state probes'
submissions, every task a client holds).
"""

from __future__ import annotations

from typing import Any

from chaos.evidence import FAIL, PASS, UNKNOWN, ChaosEvidence, Check
from chaos.faults import Window
from taskmon.harness.journal_check import read_events


def proxy_made(record: dict[str, Any], windows: list[Window]) -> bool:
    """Whether this failed call is the fault proxy's doing, not the service's: a try through
    the proxy answered by the proxy itself, or left unanswered inside a fault window."""
    if record.get("k") != "attempt" or not record.get("front"):
        return False
    if record.get("injected"):
        return True
    if record.get("outcome") not in ("timeout", "connection"):
        return False
    return any(
        w.start <= record["t"] <= (w.end if w.end is not None else float("inf")) for w in windows
    )


def judge_keys(evidence: ChaosEvidence) -> Check:
    rule = "every retried key ends accepted, every try under one key answers the same task"
    keyed = [r for r in evidence.records if r["k"] == "keyed"]
    tries = [r for r in evidence.records if r["k"] == "attempt"]
    if not keyed:
        return Check("one task per key", UNKNOWN, rule, "no retried submission recorded")
    given_up = [r["key"] for r in keyed if r.get("accepted") is None]
    split = [r for r in keyed if len(r.get("tasks") or []) > 1]
    retried = sum(1 for r in keyed if r["attempts"] > 1)
    injected = sum(1 for r in tries if r.get("injected"))
    replayed = sum(1 for r in tries if r.get("status") == 200 and r.get("task"))
    figures = {
        "keys": len(keyed), "retried": retried, "tries": len(tries), "injected_5xx": injected,
        "held": sum(1 for r in tries if r.get("front") and r.get("outcome") == "timeout"),
        "replayed_200": replayed, "given_up": len(given_up), "split": len(split),
        "max_tries": max(r["attempts"] for r in keyed),
    }  # fmt: skip
    measured = (
        f"{len(keyed)} keys, {retried} retried ({len(tries)} tries, {injected} injected 5xx, "
        f"{replayed} replayed 200s); {len(given_up)} given up, {len(split)} with two tasks"
    )
    if split:
        where = f"key {split[0]['key']} answered tasks {split[0]['tasks']}"
        return Check("one task per key", FAIL, rule, measured, figures, where)
    if given_up:
        return Check("one task per key", FAIL, rule, measured, figures,
                     f"key {given_up[0]} never accepted")  # fmt: skip
    if not retried:
        return Check("one task per key", UNKNOWN, rule, measured + ": no retry to judge", figures)
    return Check("one task per key", PASS, rule, measured, figures)


def judge_no_stray_synthesis(evidence: ChaosEvidence) -> Check:
    rule = (
        "every synthesis in the journals is of a task some client was given: none ran for a "
        "retry whose first answer was lost"
    )
    given = {
        r["task"] for r in evidence.records
        if r["k"] in ("accepted", "attempt", "idem", "read", "stream") and r.get("task")
    }  # fmt: skip
    given |= {task for step in evidence.steps for probe in step.probes for task in probe.tasks}
    events, _ = read_events(evidence.journal_dir)
    ran = {task for _, delta, (_, task, _) in events if delta > 0}
    stray = sorted(ran - given)
    # A submission of the ordinary users left unanswered may have made a task nobody holds.
    unsure = sum(1 for r in evidence.records if r["k"] == "unsure")
    figures = {"syntheses": len(ran), "tasks_given": len(given), "stray": len(stray),
               "unsure_submissions": unsure}  # fmt: skip
    measured = f"{len(ran)} tasks synthesized, {len(stray)} of them given to no client"
    if unsure:
        measured += f"; {unsure} submissions unanswered (each may explain one)"
    if not ran:
        return Check("no stray synthesis", UNKNOWN, rule, measured, figures)
    if len(stray) > unsure:
        return Check("no stray synthesis", FAIL, rule, measured, figures,
                     f"e.g. task {stray[0]}: synthesized, never answered to a client")  # fmt: skip
    return Check("no stray synthesis", PASS, rule, measured, figures)
