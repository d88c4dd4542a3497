"""The rehearsal's verdict, from the records, the journals, the samples and its timeline.

- R1 no failed call: no 5xx, no connection error, no timeout, in any phase or switch: the
  users' calls and streams, the runner's own stats probes, the final sweep.
- R2 tasks end: every accepted task ends done or failed, and stays readable while its worker
  lives. A Redis-mode task must end in Redis (read there after the load); a memory-mode task
  must be seen ended while its worker lived, or by the sweep if it still lives, or have its
  synthesis end in the journal. One with none of these is unknown (memory mode keeps a task in
  its worker only); a 404 from the worker that must know the task fails the rule.
- R3 backend follows the steps: every answer of the sampler (the stats, what the monitor page
  shows) came from a worker of its instance with the backend its generation was started with;
  every generation was heard; no worker was replaced outside a switch.
- I1-I4 (verdicts.py): I1-I3 on the hold where both instances run Redis mode, I4 on every key
  that only Redis-mode workers answered.

The cap in the other phases is measured, not judged (rehearsal_figures.py): in the mixed
phases it is not global (the Redis-mode instance shares the limit among its workers, the
memory-mode one applies it per worker), and the report says with figures what that does.
"""

from __future__ import annotations

import json
from argparse import Namespace
from collections import Counter
from dataclasses import replace
from pathlib import Path

from loadtests.evidence import Evidence, Record, read_records
from loadtests.rehearsal_figures import (
    calls_of,
    cap_figures,
    is_failed,
    phase_keys,
    phase_table,
    placed_at,
    requests_by_phase,
)
from loadtests.rehearsal_timeline import INSTANCE_NAMES, MEMORY, REDIS, Phase, Timeline
from loadtests.report import exit_code, machine_facts, verdict_table, write_junit
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
from taskmon.harness.journal_check import abandoned_tasks, read_events

EXIT_CODES = "0 pass, 1 a rule broken, 3 unknown or harness trouble"


def judge_no_failed_request(evidence: Evidence, timeline: Timeline) -> Verdict:
    rule = "no 5xx, no connection error, no timeout, through every switch and hold"
    calls = calls_of(evidence)
    failed = [r for r in calls if is_failed(r)]
    counts = {"calls": len(calls), "failed": len(failed)}
    examples = []
    for record in failed[:MAX_EXAMPLES]:
        at = placed_at(record)
        phase = timeline.phase_at(at)
        examples.append(
            f"{record.get('name', 'SSE stream')} at {at - evidence.started_at:+.2f}s "
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
    abandoned = abandoned_tasks(evidence.journal_dir) if evidence.journal_dir else set()
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
        elif readable and (found is None or not found.statuses):
            counts["unread_by_the_sweep"] += 1  # no answer within the drain: no verdict
        elif readable:
            where = "in Redis" if backend == REDIS else "on its instance"
            problems.append(
                f"task {task_id} ({backend} mode, accepted by {first['worker']} at "
                f"{first['t'] - evidence.started_at:+.2f}s): {swept or 'never found'} {where}"
            )
        elif task_id in synthesis_ended:
            counts["memory_gone_ended_in_journal"] += 1
        elif task_id in abandoned:
            counts["memory_gone_abandoned_in_journal"] += 1  # failed as abandoned at shutdown
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
    ran, dropped = (
        counts["memory_gone_ended_in_journal"],
        counts["memory_gone_abandoned_in_journal"],
    )
    unread = counts["memory_gone_unread"]
    measured = (
        f"{len(accepted)} accepted ({counts[f'{REDIS}_accepted']} in Redis mode): "
        f"{len(problems)} not ended or forgotten; {ran + dropped + unread} memory-mode tasks "
        f"unreadable once their worker left: {ran} synthesized, {dropped} abandoned at its "
        f"shutdown (per the journal), {unread} unknown"
    )
    note = (
        "a memory-mode task lives in its worker only: one that nobody read ended before a "
        "switch replaced its worker is judged by the journal (its synthesis's end line, or the "
        "`abandoned` line the shutdown writes when it fails a task); one with neither is unknown"
    )
    unknown = not accepted or unread or counts["unread_by_the_sweep"]
    status = FAIL if problems else (UNKNOWN if unknown else PASS)
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
    """R3 from the sampler's answers alone (the switch's own probes are not evidence): each
    worker, on its own instance, with its generation's backend; every generation heard from;
    no worker replaced outside a switch."""
    rule = (
        "each worker reports the backend its instance was switched to; workers change only "
        "at a switch"
    )
    problems = [
        f"the {INSTANCE_NAMES[index]} instance forked pid {pid} outside a switch at "
        f"{t - evidence.started_at:+.2f}s (a worker died)"
        for t, index, pid in timeline.unplanned
    ]
    workers: set[str] = set()
    heard: set[int] = set()
    for sample in evidence.samples:
        workers.add(sample.worker)
        generation = timeline.generation_of(sample.worker)
        instance = urls.index(sample.instance) if sample.instance in urls else None
        at = f"{sample.t - evidence.started_at:+.2f}s"
        if generation is None or generation.instance != instance:
            problems.append(
                f"{sample.worker} answered on {sample.instance} at {at}: not its worker"
            )
            continue
        heard.add(id(generation))
        if sample.backend != generation.backend:
            problems.append(
                f"{sample.worker} ({INSTANCE_NAMES[generation.instance]}, started "
                f"{generation.backend}) reported {sample.backend} at {at}"
            )
    unheard = [g for g in timeline.generations if id(g) not in heard]
    counts = {
        "samples": len(evidence.samples),
        "workers": len(workers),
        "generations": len(timeline.generations),
        "generations_unheard": len(unheard),
        "unplanned_workers": len(timeline.unplanned),
        "violations": len(problems),
    }
    measured = (
        f"{len(problems)} wrong of {len(evidence.samples)} answers from {len(workers)} workers "
        f"in {len(timeline.generations)} generations ({len(unheard)} never sampled)"
    )
    note = ""
    if unheard:
        note = "never sampled: " + ", ".join(
            f"{INSTANCE_NAMES[g.instance]} {g.backend} pids {sorted(g.pids)}" for g in unheard
        )
    status = FAIL if problems else (UNKNOWN if unheard or not evidence.samples else PASS)
    return Verdict("R3", "backend follows", status, rule, measured, "0", counts, problems[:5], note)


def windowed(evidence: Evidence, timeline: Timeline, phase: Phase) -> Evidence:
    """The evidence I2-I4 are judged on: tasks accepted in Redis mode; the reads and streams
    of them made in `phase` (the both-Redis hold); and every idempotency key whose posts were
    all answered by Redis-mode workers (a post that got no answer only inside `phase`), since
    Redis-mode workers share their keys whatever the other instance runs."""
    redis_tasks = {
        task_id
        for task_id, first in evidence.accepted().items()
        if timeline.backend_of(first["worker"]) == REDIS
    }
    keys_elsewhere: set[str] = set()
    for record in evidence.records:
        key, kind = record.get("key"), record["k"]
        if not key or kind not in ("accepted", "unsure", "idem"):
            continue
        if kind == "unsure":
            answered_by_redis = phase.contains(record["t"])  # who got it is unknown
        elif kind == "idem" and (record["same"] or record.get("status") is None):
            continue  # the accepted record speaks for it, or nothing answered
        else:
            answered_by_redis = timeline.backend_of(record.get("worker")) == REDIS
        if not answered_by_redis:
            keys_elsewhere.add(key)
    kept: list[Record] = []
    for record in evidence.records:
        kind, key = record["k"], record.get("key")
        if key and kind in ("accepted", "unsure", "idem"):
            keep = key not in keys_elsewhere
        elif kind == "accepted":
            keep = record["task"] in redis_tasks
        elif kind in ("read", "stream"):
            keep = record["task"] in redis_tasks and phase.contains(record["t"])
        else:
            keep = False
        if keep:
            kept.append(record)
    return replace(evidence, records=kept)


def judge_cap_in(evidence: Evidence, timeline: Timeline, phase: Phase | None) -> Verdict:
    """I1 over one hold: the journals replayed to its start, the peak inside it."""
    rule = "syntheses running at once, both instances, never above the limit (both in Redis mode)"
    limit = f"<= {evidence.limit}"
    if phase is None or evidence.journal_dir is None:
        return Verdict("I1", "cap", UNKNOWN, rule, "no both-Redis hold", limit)
    peaks = cap_figures(evidence, timeline, [phase])
    row = peaks[0]
    counts = {"syntheses_started": row["syntheses_started"], "peak": row["peak"]}
    measured = f"peak {row['peak']} in flight ({row['syntheses_started']} syntheses started)"
    if row["syntheses_started"] == 0:
        return Verdict("I1", "cap", UNKNOWN, rule, measured, limit, counts)
    if row["peak"] > evidence.limit:
        examples = [f"{row['seconds_over_limit']} s above the limit in {phase.name}"]
        return Verdict("I1", "cap", FAIL, rule, measured, limit, counts, examples)
    return Verdict("I1", "cap", PASS, rule, measured, limit, counts)


def judge_rehearsal(evidence: Evidence, timeline: Timeline, urls: list[str]) -> list[Verdict]:
    both = timeline.both_redis()
    window = (
        windowed(evidence, timeline, both) if both is not None else replace(evidence, records=[])
    )
    hold = "judged on the reads and streams of the hold where both instances run Redis mode"
    keys = "judged on every key all of whose posts Redis-mode workers answered"
    judged = [
        _noted(judge_visibility(window), hold),
        _noted(judge_monotonic(window), hold),
        _noted(judge_idempotency(window), keys),
    ]
    return [
        judge_no_failed_request(evidence, timeline),
        judge_tasks_end(evidence, timeline),
        judge_backend_follows(evidence, timeline, urls),
        judge_cap_in(evidence, timeline, both),
        *judged,
    ]


def _noted(verdict: Verdict, note: str) -> Verdict:
    return replace(verdict, note=f"{verdict.note}; {note}" if verdict.note else note)


def report_rehearsal(
    args: Namespace, run_dir: Path, evidence: Evidence, timeline: Timeline, trouble: list[str]
) -> int:
    """Judge, write summary.json, junit.xml and the plots, print the tables; the exit code."""
    if not evidence.records:  # an interrupted run never got to read them
        evidence.records = read_records(run_dir / "records")
    verdicts = judge_rehearsal(evidence, timeline, timeline.urls)
    code = exit_code(verdicts, [], trouble)
    rows = requests_by_phase(evidence, timeline)
    keyed = phase_keys(timeline)
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
