"""The rehearsal's verdict, from the records, the journals, the samples and its timeline.

- R1 no failed request: no 5xx, no connection error, no timeout, in any phase or switch.
- R2 tasks end: every accepted task ends done or failed, and stays readable while its worker
  lives. A Redis-mode task must end in Redis (read there after the load); a memory-mode task
  must be seen ended while its worker lived, or by the sweep if it still lives. A memory-mode
  task whose worker left before anyone read its end is counted and shown, not failed: memory
  mode keeps a task in its worker only, which is what the rehearsal moves away from.
- R3 backend follows the steps: every worker that answered the stats (what the monitor page
  shows) reported the backend its generation was started with, on its own instance.
- I1-I4 (verdicts.py), judged on the evidence of the hold where both instances run Redis mode.

The cap in the other phases is measured, not judged: in the mixed phases it is not global
(the Redis-mode instance shares the limit among its workers, the memory-mode one applies it
per worker), and the report says with figures what that does.
"""

from __future__ import annotations

import json
from argparse import Namespace
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from loadtests.evidence import Evidence, Record, read_records
from loadtests.rehearsal_timeline import INSTANCE_NAMES, MEMORY, REDIS, Phase, Timeline
from loadtests.report import exit_code, machine_facts, verdict_table, write_junit
from loadtests.slo import percentile
from loadtests.verdicts import (
    FAIL,
    MAX_EXAMPLES,
    PASS,
    UNKNOWN,
    Verdict,
    judge_idempotency,
    judge_monotonic,
    judge_visibility,
)
from taskmon.harness.client import TERMINAL
from taskmon.harness.journal_check import read_events

EXIT_CODES = "0 pass, 1 a rule broken, 3 unknown or harness trouble"


def _failed(record: Record) -> bool:
    status = record.get("status")
    return (status is not None and status >= 500) or record.get("outcome") in (
        "connection",
        "timeout",
    )


def _calls(evidence: Evidence) -> list[Record]:
    """Every HTTP call and every stream, a stream Locust stopped excepted."""
    streams = [r for r in evidence.of("stream") if r.get("outcome") != "stopped"]
    return [*evidence.of("req"), *streams]


def requests_by_phase(evidence: Evidence, timeline: Timeline) -> list[dict[str, Any]]:
    """Per phase (and the wind-down after the last): calls, failed ones, statuses, latency."""
    # Names repeat (two mixed holds, two "both memory"): number them in order.
    keyed = _phase_keys(timeline)
    rows: dict[str, dict[str, Any]] = {
        key: {"phase": key, "switch": not phase.hold, "seconds": round(phase.end - phase.start, 1)}
        for key, phase in keyed
    }
    rows["wind-down"] = {"phase": "wind-down", "switch": False, "seconds": None}
    calls_in: dict[str, list[Record]] = {key: [] for key in rows}
    for record in _calls(evidence):
        key = next((k for k, phase in keyed if phase.contains(record["t"])), "wind-down")
        calls_in[key].append(record)
    table = []
    for key, row in rows.items():
        calls = calls_in[key]
        statuses = Counter(str(r.get("status") or r.get("outcome")) for r in calls)
        latencies = [r["ms"] for r in calls if "ms" in r and r.get("status") is not None]
        table.append(
            {
                **row,
                "requests": len(calls),
                "failed": sum(1 for r in calls if _failed(r)),
                "server_errors": sum(1 for r in calls if (r.get("status") or 0) >= 500),
                "connection_errors": sum(1 for r in calls if r.get("outcome") == "connection"),
                "timeouts": sum(1 for r in calls if r.get("outcome") == "timeout"),
                "not_found": statuses.get("404", 0),
                "refused_busy": statuses.get("429", 0),
                "p50_ms": percentile(latencies, 50),
                "p99_ms": percentile(latencies, 99),
            }
        )
    return table


def _phase_keys(timeline: Timeline) -> list[tuple[str, Phase]]:
    keyed = []
    for number, phase in enumerate(timeline.phases, 1):
        kind = "hold" if phase.hold else "switch"
        keyed.append((f"{number}. {kind}: {phase.name}", phase))
    return keyed


def judge_no_failed_request(evidence: Evidence, timeline: Timeline) -> Verdict:
    rule = "no 5xx, no connection error, no timeout, through every switch and hold"
    calls = _calls(evidence)
    failed = [r for r in calls if _failed(r)]
    counts = {"calls": len(calls), "failed": len(failed)}
    examples = []
    for record in failed[:MAX_EXAMPLES]:
        phase = timeline.phase_at(record["t"])
        examples.append(
            f"{record.get('name', 'SSE stream')} at {record['t'] - evidence.started_at:+.2f}s "
            f"({phase.name if phase else 'wind-down'}): {record.get('status')} "
            f"{record.get('outcome')} from {record.get('worker')}"
        )
    measured = f"{len(failed)} of {len(calls)} calls failed"
    status = FAIL if failed else (UNKNOWN if not calls else PASS)
    return Verdict("R1", "no failed call", status, rule, measured, "0", counts, examples)


def judge_tasks_end(evidence: Evidence, timeline: Timeline) -> Verdict:
    rule = "every accepted task ends done or failed, and stays readable while its worker lives"
    accepted = evidence.accepted()
    seen_ending = _endings_seen(evidence)
    synthesis_ended = _journal_ended_tasks(evidence)
    problems: list[str] = []
    counts: Counter[str] = Counter()
    for task_id, first in accepted.items():
        generation = timeline.generation_of(first["worker"])
        if generation is None:
            problems.append(f"task {task_id}: accepted by {first['worker']}, no known worker")
            continue
        backend = generation.backend
        counts[f"{backend}_accepted"] += 1
        found = (evidence.sweep or {}).get(task_id)
        swept = found.state if found is not None else None
        # Redis keeps every task, and the sweep reads a live worker's: their answer is final.
        readable = backend == REDIS or generation.gone is None
        if readable and swept in TERMINAL:
            counts[f"{backend}_{swept}"] += 1
        elif backend == MEMORY and task_id in seen_ending:
            counts[f"{backend}_{seen_ending[task_id]}"] += 1
        elif readable:
            where = "in Redis" if backend == REDIS else "on its instance"
            problems.append(
                f"task {task_id} ({backend} mode, accepted by {first['worker']} at "
                f"{first['t'] - evidence.started_at:+.2f}s): {swept or 'never found'} {where}"
            )
        elif task_id in synthesis_ended:
            counts["memory_gone_ended_in_journal"] += 1
        else:
            counts["memory_gone_unread"] += 1
    forgotten = _forgotten(evidence, timeline, accepted)
    if evidence.sweep is None:  # interrupted before the end was read: only 404s can be judged
        status = FAIL if forgotten else UNKNOWN
        return Verdict(
            "R2", "tasks end", status, rule, "no sweep ran", "0",
            {"forgotten_reads": len(forgotten)},
            forgotten[:MAX_EXAMPLES], "the run ended before its final sweep",
        )  # fmt: skip
    problems.extend(forgotten)
    counts["forgotten_reads"] = sum(1 for p in problems if "forgot" in p)
    journal_only, unread = counts["memory_gone_ended_in_journal"], counts["memory_gone_unread"]
    measured = (
        f"{len(accepted)} accepted ({counts[f'{REDIS}_accepted']} in Redis mode): "
        f"{len(problems)} not ended or forgotten; {journal_only + unread} memory-mode tasks "
        f"unreadable once their worker left ({journal_only} ended per the synthesis journal)"
    )
    note = (
        "a memory-mode task lives in its worker only: one that nobody read ended before a "
        "switch replaced its worker is judged by the journal's end of its synthesis; "
        f"{unread} had neither (queued at the switch: the worker's shutdown fails them, "
        "unseen from outside)"
    )
    status = FAIL if problems else (UNKNOWN if not accepted else PASS)
    return Verdict(
        "R2", "tasks end", status, rule, measured, "0", dict(counts), problems[:MAX_EXAMPLES], note
    )


def _endings_seen(evidence: Evidence) -> dict[str, str]:
    """task -> the terminal state a status read or a stream event showed first."""
    seen: dict[str, str] = {}
    for record in evidence.of("read"):
        if record.get("status") == 200 and record.get("state") in TERMINAL:
            seen.setdefault(record["task"], record["state"])
    for record in evidence.of("stream"):
        for event in record.get("events", []):
            if event[1] in TERMINAL:
                seen.setdefault(record["task"], event[1])
    return seen


def _journal_ended_tasks(evidence: Evidence) -> set[str]:
    if evidence.journal_dir is None:
        return set()
    events, _ = read_events(evidence.journal_dir)
    return {task for _, delta, (_, task, _) in events if delta < 0}


def _forgotten(evidence: Evidence, timeline: Timeline, accepted: dict[str, Record]) -> list[str]:
    """Reads that answered 404 where the task had to be: on its own (memory) worker, or on
    any Redis-mode worker for a task accepted in Redis mode."""
    problems = []
    for record in [*evidence.of("read"), *evidence.of("stream")]:
        first = accepted.get(record["task"])
        if first is None or record.get("status") != 404:
            continue
        backend = timeline.backend_of(first["worker"])
        own_worker = record.get("worker") == first["worker"]
        redis_reader = backend == REDIS and timeline.backend_of(record.get("worker")) == REDIS
        if own_worker or redis_reader:
            problems.append(
                f"task {record['task']} ({backend} mode, accepted by {first['worker']}): "
                f"forgot by {record.get('worker')}, 404 at "
                f"{record['t'] - evidence.started_at:+.2f}s"
            )
    return problems


def judge_backend_follows(evidence: Evidence, timeline: Timeline, urls: list[str]) -> Verdict:
    rule = "each worker reports the backend its instance was switched to, from its first answer"
    problems = []
    workers: set[str] = set()
    for sample in evidence.samples:
        workers.add(sample.worker)
        generation = timeline.generation_of(sample.worker)
        instance = urls.index(sample.instance) if sample.instance in urls else None
        at = f"{sample.t - evidence.started_at:+.2f}s"
        if generation is None or generation.instance != instance:
            problems.append(
                f"{sample.worker} answered on {sample.instance} at {at}: not its worker"
            )
        elif sample.backend != generation.backend:
            problems.append(
                f"{sample.worker} ({INSTANCE_NAMES[generation.instance]}, started "
                f"{generation.backend}) reported {sample.backend} at {at}"
            )
    counts = {
        "samples": len(evidence.samples),
        "workers": len(workers),
        "generations": len(timeline.generations),
        "violations": len(problems),
    }
    measured = (
        f"{len(problems)} wrong of {len(evidence.samples)} answers from {len(workers)} workers "
        f"in {len(timeline.generations)} generations"
    )
    status = FAIL if problems else (UNKNOWN if not evidence.samples else PASS)
    return Verdict("R3", "backend follows", status, rule, measured, "0", counts, problems[:5])


def windowed(evidence: Evidence, timeline: Timeline, phase: Phase) -> Evidence:
    """The evidence of one hold: tasks accepted in Redis mode, the reads and streams made in
    the hold, and the idempotency keys used in it alone."""
    redis_tasks = {
        task_id
        for task_id, first in evidence.accepted().items()
        if timeline.backend_of(first["worker"]) == REDIS
    }
    keyed = [
        r for r in evidence.records if r.get("key") and r["k"] in ("accepted", "unsure", "idem")
    ]
    outside = {r["key"] for r in keyed if not phase.contains(r.get("t", -1.0))}
    kept: list[Record] = []
    for record in evidence.records:
        kind = record["k"]
        if kind == "accepted" and record["task"] in redis_tasks:
            if not record.get("key") or record["key"] not in outside:
                kept.append(record)
        elif kind in ("read", "stream"):
            if record["task"] in redis_tasks and phase.contains(record["t"]):
                kept.append(record)
        elif kind in ("unsure", "idem") and record.get("key") and record["key"] not in outside:
            kept.append(record)
    return replace(evidence, records=kept)


def judge_cap_in(evidence: Evidence, phase: Phase | None) -> Verdict:
    """I1 over one hold: the journals replayed to its start, the peak inside it."""
    rule = "syntheses running at once, both instances, never above the limit (both in Redis mode)"
    limit = f"<= {evidence.limit}"
    if phase is None or evidence.journal_dir is None:
        return Verdict("I1", "cap", UNKNOWN, rule, "no both-Redis hold", limit)
    peaks = cap_figures(evidence, None, [phase])
    row = peaks[0]
    counts = {"syntheses_started": row["syntheses_started"], "peak": row["peak"]}
    measured = f"peak {row['peak']} in flight ({row['syntheses_started']} syntheses started)"
    if row["syntheses_started"] == 0:
        return Verdict("I1", "cap", UNKNOWN, rule, measured, limit, counts)
    if row["peak"] > evidence.limit:
        examples = [f"{row['seconds_over_limit']} s above the limit in {phase.name}"]
        return Verdict("I1", "cap", FAIL, rule, measured, limit, counts, examples)
    return Verdict("I1", "cap", PASS, rule, measured, limit, counts)


def cap_figures(
    evidence: Evidence, timeline: Timeline | None, phases: list[Phase]
) -> list[dict[str, Any]]:
    """Per phase: the most syntheses in flight (all, and per instance when the timeline says
    whose pid is whose), and how long the total stayed above the limit."""
    if evidence.journal_dir is None:
        return []
    events, _ = read_events(evidence.journal_dir)
    events.sort(key=lambda e: (e[0], e[1]))
    rows = []
    for phase in phases:
        start_ns, end_ns = phase.start * 1e9, phase.end * 1e9
        running: set[tuple[str, str, str]] = set()
        peak, started, over_ns = 0, 0, 0.0
        per_instance: dict[str, int] = defaultdict(int)
        last = start_ns
        for stamp, delta, synthesis in events:
            if stamp >= end_ns:
                break
            if stamp >= start_ns and len(running) > evidence.limit:
                over_ns += stamp - max(last, start_ns)
            last = stamp
            if delta > 0:
                running.add(synthesis)
                started += stamp >= start_ns
            else:
                running.discard(synthesis)
            if stamp >= start_ns:
                peak = max(peak, len(running))
                _peak_per_instance(running, timeline, per_instance)
        if len(running) > evidence.limit:
            over_ns += end_ns - max(last, start_ns)
        peak = max(peak, len(running))
        _peak_per_instance(running, timeline, per_instance)
        rows.append(
            {
                "phase": phase.name,
                "peak": peak,
                "per_instance_peak": dict(per_instance),
                "syntheses_started": started,
                "seconds_over_limit": round(over_ns / 1e9, 2),
                "share_over_limit": round(over_ns / max(end_ns - start_ns, 1.0), 3),
            }
        )
    return rows


def _peak_per_instance(
    running: set[tuple[str, str, str]], timeline: Timeline | None, peaks: dict[str, int]
) -> None:
    if timeline is None:
        return
    now: Counter[str] = Counter()
    for pid, _, _ in running:
        index = timeline.instance_of_pid(int(pid)) if pid.isdigit() else None
        now[INSTANCE_NAMES[index] if index is not None else "unknown"] += 1
    for name, count in now.items():
        peaks[name] = max(peaks.get(name, 0), count)


def judge_rehearsal(evidence: Evidence, timeline: Timeline, urls: list[str]) -> list[Verdict]:
    both = timeline.both_redis()
    window = (
        windowed(evidence, timeline, both) if both is not None else replace(evidence, records=[])
    )
    note = "judged on the hold where both instances run Redis mode"
    judged = [judge_visibility(window), judge_monotonic(window), judge_idempotency(window)]
    return [
        judge_no_failed_request(evidence, timeline),
        judge_tasks_end(evidence, timeline),
        judge_backend_follows(evidence, timeline, urls),
        judge_cap_in(evidence, both),
        *[replace(v, note=v.note or note) for v in judged],
    ]


def phase_table(rows: list[dict[str, Any]], caps: dict[str, dict[str, Any]], limit: int) -> str:
    lines = [
        f"{'phase':52} {'s':>5} {'calls':>6} {'failed':>6} {'404':>5} {'p99 ms':>7}  in flight"
    ]
    for row in rows:
        cap = caps.get(row["phase"])
        flight = ""
        if cap is not None:
            split = ", ".join(f"{k} {v}" for k, v in sorted(cap["per_instance_peak"].items()))
            flight = f"peak {cap['peak']}/{limit} ({split}), {cap['share_over_limit']:.0%} over"
        p99 = "-" if row["p99_ms"] is None else f"{row['p99_ms']:.0f}"
        seconds = "-" if row["seconds"] is None else f"{row['seconds']:.0f}"
        lines.append(
            f"{row['phase'][:52]:52} {seconds:>5} {row['requests']:6} {row['failed']:6} "
            f"{row['not_found']:5} {p99:>7}  {flight}"
        )
    return "\n".join(lines)


def report_rehearsal(
    args: Namespace, run_dir: Path, evidence: Evidence, timeline: Timeline, trouble: list[str]
) -> int:
    """Judge, write summary.json, junit.xml and the plots, print the tables; the exit code."""
    if not evidence.records:  # an interrupted run never got to read them
        evidence.records = read_records(run_dir / "records")
    verdicts = judge_rehearsal(evidence, timeline, timeline.urls)
    code = exit_code(verdicts, [], trouble)
    rows = requests_by_phase(evidence, timeline)
    keyed = _phase_keys(timeline)
    caps = {
        key: row
        for (key, _), row in zip(
            keyed, cap_figures(evidence, timeline, [p for _, p in keyed]), strict=True
        )
    }
    shades = [(p.start - evidence.started_at, p.end - evidence.started_at, key) for key, p in keyed]
    plots: list[str] = []
    try:
        from loadtests.plots import plot_all  # noqa: PLC0415 (matplotlib only when reporting)

        plots = plot_all(evidence, run_dir, shades)
    except Exception as exc:  # a plot must never hide the verdict
        trouble.append(f"plots not drawn: {exc}")
    summary = {
        "run": run_dir.name,
        "exit_code": code,
        "exit_codes": EXIT_CODES,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "phases": rows,
        "cap_by_phase": caps,
        "limit": evidence.limit,
        "rules": [v.to_dict() for v in verdicts],
        "timeline": timeline.to_dict(),
        "trouble": trouble,
        "plots": plots,
        "machine": machine_facts(),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_junit(run_dir / "junit.xml", verdicts, [])
    print(phase_table(rows, caps, evidence.limit))
    print(verdict_table(verdicts, []).rsplit("\n", 1)[0])
    for problem in trouble:
        print(f"trouble: {problem}")
    failed = sum(row["failed"] for row in rows)
    print(
        f"{failed} failed calls in all; exit {code} ({EXIT_CODES})\nreport: {run_dir}", flush=True
    )
    return code
