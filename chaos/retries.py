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


def proxy_made(records: list[dict[str, Any]], windows: list[Window]) -> set[int]:
    """The positions in `records` of the failed calls the fault proxy made itself: a try
    through it answered by it (X-Fault-Injected) in place of anything but a service 5xx
    (X-Fault-Replaced), and, up to the number of answers the `slow_headers` toxics held, a
    try through it that timed out while a fault window was open. A dropped connection is
    never the proxy's in these faults (its errors are answers), so never excused."""
    held = sum(
        counts.get("connections_hit", 0)
        for window in windows
        for counts in window.details.get("toxics", {}).values()
        if counts.get("type") == "slow_headers"
    )
    made: set[int] = set()
    for index, record in enumerate(records):
        if record.get("k") != "attempt" or not record.get("front"):
            continue
        if record.get("injected"):
            if (record.get("replaced") or 0) < 500:
                made.add(index)
        elif record.get("outcome") == "timeout" and held > 0 and _overlaps(record, windows):
            made.add(index)
            held -= 1
    return made


def service_5xx(record: dict[str, Any]) -> bool:
    """A 5xx of the service's own: answered by it, or hidden behind an injected answer."""
    if record.get("injected"):
        return (record.get("replaced") or 0) >= 500
    return (record.get("status") or 0) >= 500


def _overlaps(record: dict[str, Any], windows: list[Window]) -> bool:
    end = record.get("t_end") or record["t"]
    return any(
        end >= w.start and record["t"] <= (w.end if w.end is not None else float("inf"))
        for w in windows
    )


def judge_keys(evidence: ChaosEvidence) -> Check:
    rule = "every retried key ends accepted, every try under one key answers the same task"
    keyed = [r for r in evidence.records if r["k"] == "keyed"]
    tries = [r for r in evidence.records if r["k"] == "attempt"]
    if not keyed:
        return Check("one task per key", UNKNOWN, rule, "no retried submission recorded")
    # A key tried but never concluded: its user was stopped mid-way (harness trouble).
    unfinished = sorted({r["key"] for r in tries} - {r["key"] for r in keyed})
    given_up = [r for r in keyed if r.get("accepted") is None]
    split = [r for r in keyed if len(r.get("tasks") or []) > 1]
    retried = sum(1 for r in keyed if r["attempts"] > 1)
    injected = sum(1 for r in tries if r.get("injected"))
    replays = [r for r in tries if r.get("replay")]
    figures = {
        "keys": len(keyed), "retried": retried, "tries": len(tries), "injected_5xx": injected,
        "held": sum(1 for r in tries if r.get("front") and r.get("outcome") == "timeout"),
        "replayed_200": sum(1 for r in tries if r.get("status") == 200 and not r.get("replay")),
        "replays_on_the_other_instance": len(replays),
        "given_up": len(given_up), "split": len(split), "unfinished": len(unfinished),
        "max_tries": max(r["attempts"] for r in keyed),
    }  # fmt: skip
    measured = (
        f"{len(keyed)} keys, {retried} retried ({len(tries)} tries, {injected} injected 5xx, "
        f"{figures['replayed_200']} replayed 200s, {len(replays)} replays on the other "
        f"instance); {len(given_up)} given up, {len(split)} with two tasks"
    )
    if split:
        where = f"key {split[0]['key']} answered tasks {split[0]['tasks']}"
        return Check("one task per key", FAIL, rule, measured, figures, where)
    if given_up:
        why = (f"refused {given_up[0]['refused']}" if given_up[0].get("refused")
               else "never accepted")  # fmt: skip
        return Check("one task per key", FAIL, rule, measured, figures,
                     f"key {given_up[0]['key']}: {why}")  # fmt: skip
    if unfinished:
        return Check("one task per key", UNKNOWN, rule, measured, figures,
                     f"{len(unfinished)} keys never concluded, e.g. {unfinished[0]}")  # fmt: skip
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
    began: dict[str, float] = {}
    for t, delta, (_, task, _) in events:
        if delta > 0:
            began.setdefault(task, t / 1e9)
    stray = sorted((at, task) for task, at in began.items() if task not in given)
    # A submission of the ordinary users left unanswered may have made a task nobody holds:
    # each explains one stray whose synthesis began after it was sent.
    unsure = sorted(r["t"] for r in evidence.records if r["k"] == "unsure")
    unexplained = _unexplained(stray, unsure)
    figures = {"syntheses": len(began), "tasks_given": len(given), "stray": len(stray),
               "unsure_submissions": len(unsure), "unexplained": len(unexplained)}  # fmt: skip
    measured = f"{len(began)} tasks synthesized, {len(stray)} of them given to no client"
    if unsure:
        measured += f"; {len(unsure)} submissions unanswered (each may explain a later one)"
    if not began:
        return Check("no stray synthesis", UNKNOWN, rule, measured, figures)
    if unexplained:
        where = f"e.g. task {unexplained[0]}: synthesized, never answered to a client"
        return Check("no stray synthesis", FAIL, rule, measured, figures, where)
    return Check("no stray synthesis", PASS, rule, measured, figures)


def _unexplained(stray: list[tuple[float, str]], unsure: list[float]) -> list[str]:
    """The strays (start, task; sorted) no unanswered submission (sorted send times) can
    explain, each submission explaining at most one stray begun after it."""
    left, unexplained, used = list(unsure), [], 0
    for began, task in stray:
        if used < len(left) and left[used] <= began:
            used += 1
        else:
            unexplained.append(task)
    return unexplained
