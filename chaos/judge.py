"""A scenario's checker: its promises judged pass, fail or unknown from what the run gathered
(evidence.py). The failover's own account, the cap and the log are judged in switching.py;
here the rest, and the list each scenario gets. Each check says its rule, what it measured,
and, when it fails, where.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from chaos.evidence import FAIL, PASS, UNKNOWN, ChaosEvidence, Check, TaskEnd
from chaos.retries import judge_keys, judge_no_stray_synthesis, proxy_made, service_5xx
from chaos.switching import (
    judge_cap,
    judge_detect,
    judge_log,
    judge_repromote,
    judge_untouched,
)
from taskmon.harness.journal_check import read_events

KILL_CUT_S = 2.0  # calls the dead worker had open fail within this of its death

# How the syntheses a fault caught running on its worker must end: a killed worker's are
# failed by another worker's reaper; a frozen one's by its own keeper once it runs again
# (lease_lost), or by a reaper first if the freeze outlasted its heartbeat (abandoned).
VICTIM_ENDS = {"kill-worker": ("abandoned",), "freeze-worker": ("lease_lost", "abandoned")}


def judge(evidence: ChaosEvidence) -> list[Check]:
    if not evidence.windows:
        return [Check("fault", UNKNOWN, "the fault was injected", "it never was")]
    checks = [
        judge_steady_state(evidence),
        judge_failed_calls(evidence),
        judge_tasks(evidence),
        judge_terminal_kept(evidence),
        judge_visible(evidence),
        judge_cap(evidence),
    ]
    if evidence.scenario.redis_fault:
        checks += [judge_detect(evidence), judge_repromote(evidence), judge_log(evidence)]
    if any("toxics" in window.details for window in evidence.windows):
        checks.append(judge_toxics_reached(evidence))
    if evidence.scenario.instances > 1:
        checks.append(judge_untouched(evidence))
    if evidence.scenario.fault in VICTIM_ENDS:
        checks.append(judge_victim(evidence))
    if evidence.scenario.http_front:
        checks += [judge_keys(evidence), judge_no_stray_synthesis(evidence)]
    return checks


def judge_steady_state(evidence: ChaosEvidence) -> Check:
    rule = "the steady-state hypothesis holds before, during and after the fault"
    names = [step.name for step in evidence.steps]
    if names != ["before", "during", "after"]:
        return Check("steady state", UNKNOWN, rule, f"steps run: {names or 'none'}")
    for step in evidence.steps:
        if not step.ok:
            probe = step.failed()[0]
            return Check(
                "steady state", FAIL, rule, f"failed {step.name}: {probe.name}",
                where=f"step {step.name!r}, probe {probe.name!r}: {probe.detail}",
            )  # fmt: skip
    probes = sum(len(step.probes) for step in evidence.steps)
    return Check("steady state", PASS, rule, f"{probes} probes in 3 steps held")


def judge_failed_calls(evidence: ChaosEvidence) -> Check:
    rule = "no 5xx and no dropped or timed-out call, users' and watcher's alike"
    if evidence.scenario.fault == "kill-worker":
        rule += f" (except calls the killed worker had open, ended within {KILL_CUT_S:.0f} s)"
    if evidence.scenario.http_front:
        rule += " (except the fault proxy's own: its injected 5xx, the answers it held)"
    calls = [r for r in evidence.records if r["k"] in ("req", "stream", "attempt")]
    if not calls:
        return Check("no failed call", UNKNOWN, rule, "no call recorded")
    failed, cut, injected = [], [], []
    death = evidence.deaths.get(evidence.victim or -1)
    by_proxy = proxy_made(calls, evidence.windows)

    def cut_by_kill(start: float, end: float, dropped: bool) -> bool:
        """A connection the dead worker had open: opened before its death, dropped (no
        answer: a 5xx is an answer, and never excused) within KILL_CUT_S after it."""
        return death is not None and dropped and start <= death <= end <= death + KILL_CUT_S

    for index, record in enumerate(calls):
        status, outcome = record.get("status"), record.get("outcome")
        if not ((status or 0) >= 500 or outcome in ("timeout", "connection", "unreadable")):
            continue
        end = record.get("t_end") or record["t"] + (record.get("ms") or 0) / 1000
        if index in by_proxy:
            injected.append(record)
        elif cut_by_kill(record["t"], end, outcome == "connection"):
            cut.append(record)
        else:
            failed.append(record)
    watcher = [
        x for x in evidence.looks
        if (x.status == 0 or x.status >= 500) and not cut_by_kill(x.t, x.t_end, x.status == 0)
    ]  # fmt: skip
    statuses = Counter(str(r.get("status")) for r in calls)
    figures = {
        "calls": len(calls), "failed": len(failed), "cut_by_kill": len(cut),
        "watcher_failed": len(watcher), "statuses": dict(statuses),
        # The service's own 5xx: the fault proxy's injected ones are counted apart.
        "five_xx": sum(1 for r in calls if service_5xx(r)),
        "proxy_made": len(injected),
    }  # fmt: skip
    measured = f"{len(failed)} of {len(calls)} calls failed, {len(watcher)} of the watcher's reads"
    if cut:
        measured += f"; {len(cut)} cut by the kill"
    if injected:
        measured += f"; {len(injected)} failed by the fault proxy itself"
    if failed or watcher:
        first = failed[0] if failed else None
        where = (
            f"{_call_name(first)} at {first['t'] - evidence.load_start:+.2f} s: "
            f"{first.get('status')} {first.get('outcome')} {first.get('error', '')}"
            if first
            else f"watcher: {watcher[0].status} {watcher[0].error}"
        )
        return Check("no failed call", FAIL, rule, measured, figures, where)
    return Check("no failed call", PASS, rule, measured, figures)


def _call_name(record: dict[str, Any]) -> str:
    if record["k"] == "attempt":
        where = "through the fault proxy" if record.get("front") else "on an instance"
        return f"POST /api/tts {'replay' if record.get('replay') else 'try'} {where}"
    return str(record.get("name", "SSE stream"))


def judge_tasks(evidence: ChaosEvidence) -> Check:
    rule = "every accepted task ends done or failed, and every instance reads that end"
    accepted = {r["task"] for r in evidence.records if r["k"] == "accepted"}
    first_worker: dict[str, str] = {}
    for record in evidence.records:
        if record["k"] == "accepted":
            first_worker.setdefault(record["task"], record["worker"])
    unsure = sum(1 for r in evidence.records if r["k"] == "unsure")
    if evidence.endings is None:
        return Check("no task lost", UNKNOWN, rule, f"{len(accepted)} accepted, never read back")
    ends: Counter[str] = Counter()
    lost = []
    for task in sorted(accepted):
        end = evidence.endings.get(task)
        if (
            end is None
            or end.state not in ("done", "failed")
            or any(answer != end.state for answer in end.by_instance.values())
        ):
            lost.append((task, end))
            continue
        ends[end.state if end.state == "done" else f"failed/{end.error}"] += 1
    failed = {
        task: f"{end.error} (accepted by {first_worker.get(task)})"
        for task, end in evidence.endings.items()
        if end.state == "failed"
    }
    figures = {"accepted": len(accepted), "ended": dict(ends), "lost": len(lost), "unsure": unsure,
               "failed": failed}  # fmt: skip
    measured = f"{len(accepted)} accepted: {dict(ends)}; {len(lost)} lost"
    if unsure:
        measured += f"; {unsure} submissions unanswered (may have happened)"
    # A failure names its cause: only the fault that kills or freezes a worker may cost
    # tasks (`abandoned`, `lease_lost`); any other failure is a task lost to the fault.
    allowed = {f"failed/{code}" for code in VICTIM_ENDS.get(evidence.scenario.fault, ())}
    wrong = sorted(k for k in ends if k.startswith("failed/") and k not in allowed)
    if wrong:
        task = next(t for t, why in failed.items() if f"failed/{why.split(' ')[0]}" in wrong)
        return Check("no task lost", FAIL, rule, measured, figures,
                     f"failed as {wrong}, e.g. {task}: {failed[task]}")  # fmt: skip
    if lost:
        task, end = lost[0]
        where = f"{task}: {end.by_instance if end else 'never read'}"
        return Check("no task lost", FAIL, rule, measured, figures, where)
    if not accepted:
        return Check("no task lost", UNKNOWN, rule, "no task accepted", figures)
    return Check("no task lost", PASS, rule, measured, figures)


def ends_seen(records: list[dict[str, Any]]) -> dict[str, set[str]]:
    """task -> every end a client saw of it: "done", or "failed/<code>"."""
    seen: dict[str, set[str]] = {}
    for record in records:
        if record["k"] == "read" and record.get("state") in ("done", "failed"):
            state = record["state"]
            seen.setdefault(record["task"], set()).add(
                state if state == "done" else f"failed/{record.get('error')}"
            )
        elif record["k"] == "stream":
            for event in record.get("events") or []:
                if event[1] in ("done", "failed"):
                    code = event[5] if len(event) > 5 else None
                    end = "done" if event[1] == "done" else f"failed/{code}"
                    seen.setdefault(record["task"], set()).add(end)
    return seen


def end_change(states: set[str], end: TaskEnd) -> str | None:
    """How the final end differs from what clients saw: None (the same), "corrected" (an
    `abandoned` that became its worker's done), or what changed."""
    final = "done" if end.state == "done" else f"failed/{end.error}"
    others = states - {final}
    if not others:
        return None
    if final == "done" and others == {"failed/abandoned"}:
        return "corrected"
    return f"a client saw {sorted(states)}, it ended {final}"


def judge_terminal_kept(evidence: ChaosEvidence) -> Check:
    rule = (
        "a task a client saw done stays done; only a reaper's `abandoned`, presumed while its "
        "worker was cut off, may turn into that worker's `done`"
    )
    if evidence.endings is None:
        return Check("ends kept", UNKNOWN, rule, "the tasks were never read back")
    seen = ends_seen(evidence.records)
    changed, corrected = [], []
    for task, states in sorted(seen.items()):
        end = evidence.endings.get(task)
        if end is None or end.state is None:
            continue  # judged by "no task lost"
        change = end_change(states, end)
        if change == "corrected":
            corrected.append(task)
        elif change is not None:
            changed.append(f"{task}: {change}")
    figures = {"tasks_seen_ended": len(seen), "changed": len(changed), "corrected": len(corrected)}
    measured = (
        f"{len(seen)} tasks seen ended by clients; {len(changed)} changed after, "
        f"{len(corrected)} abandoned ones corrected to done"
    )
    if changed:
        return Check("ends kept", FAIL, rule, measured, figures, changed[0])
    return Check("ends kept", PASS, rule, measured, figures)


def judge_visible(evidence: ChaosEvidence) -> Check:
    """I2 through the fault: a task once accepted is never answered 404 (a degraded worker
    that does not know it says 421). One exception, counted: with one instance cut off, the
    others cannot know what its workers accept until they write it back."""
    rule = "no read of an accepted task answers 404 (a degraded worker says 421)"
    cut = evidence.cut_pids
    partial = len(evidence.scenario.cut_instances) < evidence.scenario.instances
    if partial:
        rule += "; the instance that kept Redis may not know the cut one's tasks yet"
    accepted: dict[str, tuple[float, int | None]] = {}
    for record in evidence.records:
        if record["k"] == "accepted":
            accepted.setdefault(record["task"], (record.get("t_answer", record["t"]),
                                                 _pid(record.get("worker"))))  # fmt: skip
    reads = [r for r in evidence.records if r["k"] in ("read", "stream") and r["task"] in accepted]
    missing, excused = [], 0
    for read in reads:
        answered_at, owner = accepted[read["task"]]
        if read.get("status") != 404 or read["t"] < answered_at:
            continue
        if partial and owner in cut and _pid(read.get("worker")) not in cut:
            excused += 1
        else:
            missing.append(read)
    unknown = sum(1 for r in reads if r.get("status") == 421)
    figures = {"reads": len(reads), "not_found": len(missing), "excused": excused,
               "unknown_while_degraded": unknown}  # fmt: skip
    measured = f"{len(missing)} of {len(reads)} reads answered 404; {unknown} answered 421"
    if partial:
        measured += f"; {excused} 404s of the cut instance's tasks from the other"
    if missing:
        first = missing[0]
        where = (f"{first['task']} at {first['t'] - evidence.load_start:+.2f} s from "
                 f"{first.get('worker')}")  # fmt: skip
        return Check("visible", FAIL, rule, measured, figures, where)
    return Check("visible", PASS, rule, measured, figures)


def _pid(worker: object) -> int | None:
    text = str(worker or "")
    tail = text.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def judge_victim(evidence: ChaosEvidence) -> Check:
    codes = VICTIM_ENDS[evidence.scenario.fault]
    rule = "every synthesis the fault caught running on its worker ends failed " + " or ".join(
        f"`{code}`" for code in codes
    )
    if evidence.victim is None or evidence.endings is None:
        return Check("victim's tasks", UNKNOWN, rule, "no worker was hit, or no task read back")
    window = evidence.windows[0]
    until = window.end if evidence.scenario.fault == "freeze-worker" else None
    caught = caught_running(evidence.journal_dir, evidence.victim, window.start, until)
    wrong = {}
    for task in caught:
        end = evidence.endings.get(task)
        if end is None or end.state != "failed" or end.error not in codes:
            wrong[task] = f"{end.state}/{end.error}" if end else "never read"
    figures = {"victim": evidence.victim, "caught": len(caught), "wrong": wrong}
    measured = (
        f"{len(caught)} caught running on pid {evidence.victim}; {len(wrong)} ended otherwise"
    )
    if not caught:
        return Check("victim's tasks", UNKNOWN, rule, measured, figures)
    if wrong:
        task, how = next(iter(wrong.items()))
        return Check("victim's tasks", FAIL, rule, measured, figures, f"{task} ended {how}")
    return Check("victim's tasks", PASS, rule, measured, figures)


def caught_running(journal_dir: Path, pid: int, at: float, until: float | None) -> list[str]:
    """Tasks whose synthesis on `pid` had started by `at` (monotonic s) and had not ended by
    `until`: never ended (a kill: `until` None), or ended only after the fault (a freeze).
    A synthesis whose end line was written before the signal landed is not caught."""
    events, _ = read_events(journal_dir)
    started: dict[str, float] = {}
    ended: dict[str, float] = {}
    for t, delta, (who, task, _) in events:
        if who == str(pid):
            (started if delta > 0 else ended)[task] = t / 1e9
    caught = []
    for task, began in started.items():
        end = ended.get(task)
        if began <= at and (end is None or (until is not None and end > until)):
            caught.append(task)
    return sorted(caught)


def judge_toxics_reached(evidence: ChaosEvidence) -> Check:
    """Toxiproxy's users find toxics that silently missed connections, even at toxicity 1.0:
    every toxic of the fault must have hit connections; at toxicity 1.0 it may miss none;
    below it, the share it hit must be its toxicity (an exact binomial tail above one in a
    million). Clients never saw more of a toxic's injected answers than it hit."""
    rule = (
        "every toxic hit connections, missed none at toxicity 1.0, kept its toxicity below, "
        "and no client saw more of its answers than it hit"
    )
    counts: dict[str, Any] = {}
    for window in evidence.windows:
        counts |= window.details.get("toxics", {})
    seen = Counter(
        str(r["injected"]) for r in evidence.records if r["k"] == "attempt" and r.get("injected")
    )
    wrong = [name for name, c in counts.items() if not toxicity_kept(c)]
    wrong += [
        name for name, c in counts.items()
        if seen[name.rsplit("/", 1)[-1]] > int(c.get("connections_hit", 0))
    ]  # fmt: skip
    measured = ", ".join(
        f"{name}: {c.get('connections_hit')} hit of {c.get('connections_met')}"
        + (f" (toxicity {c['toxicity']})" if c.get("toxicity", 1.0) < 1.0 else "")
        + (f", {seen[name.rsplit('/', 1)[-1]]} seen" if seen[name.rsplit("/", 1)[-1]] else "")
        for name, c in sorted(counts.items())
    )
    if wrong:
        return Check("toxics reached", FAIL, rule, measured, counts, f"not as set: {wrong}")
    return Check("toxics reached", PASS, rule, measured, counts)


UNLIKELY = 1e-6  # a false alarm once in a million runs per toxic; a toxicity ignored, at once


def toxicity_kept(counts: dict[str, Any]) -> bool:
    met, hit = int(counts.get("connections_met", 0)), int(counts.get("connections_hit", 0))
    toxicity = float(counts.get("toxicity", 1.0))
    if toxicity >= 1.0:
        return hit == met > 0
    if met == 0:
        return False
    below = sum(_binomial(met, k, toxicity) for k in range(hit + 1))
    above = sum(_binomial(met, k, toxicity) for k in range(hit, met + 1))
    return min(below, above) > UNLIKELY


def _binomial(n: int, k: int, p: float) -> float:
    """P(exactly k of n) at probability p, through logarithms (no overflow for large n)."""
    if p <= 0.0:
        return 1.0 if k == 0 else 0.0
    log_p = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    return math.exp(log_p + k * math.log(p) + (n - k) * math.log1p(-p))
