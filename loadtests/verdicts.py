"""The verdict on each invariant, from evidence outside the service's own counters.

Each judge returns pass, fail or unknown. Unknown means the run did not exercise the rule
(no data, or not across workers): no data never counts as a pass. A request that timed out
or was cut "may have happened": it is counted as such, and never read as "did not happen".
A failure carries examples (task, worker, time into the run), so it can be looked up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtests.evidence import Evidence, Record
from taskmon.harness.journal_check import check_cap, read_events
from taskmon.harness.monotonic import monotonic_violations, stream_violations

PASS, FAIL, UNKNOWN, NOT_JUDGED = "pass", "fail", "unknown", "not judged"
MAX_EXAMPLES = 5


@dataclass
class Verdict:
    invariant: str  # I1 ... I7
    name: str
    status: str
    rule: str
    measured: str
    limit: str
    counts: Mapping[str, float] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _at(evidence: Evidence, t: float | None) -> str:
    return "?" if t is None else f"{t - evidence.started_at:+.2f}s"


def judge_cap_from_journals(evidence: Evidence) -> Verdict:
    """I1 from the synthesis journals: the most syntheses running at once, all workers."""
    rule = "syntheses running at once, all workers and hosts, never above the limit"
    if evidence.journal_dir is None or not any(evidence.journal_dir.glob("journal-*.jsonl")):
        return Verdict("I1", "cap", UNKNOWN, rule, "no journal", f"<= {evidence.limit}")
    report = check_cap(evidence.journal_dir)
    counts = {"syntheses": report.syntheses, "peak": report.peak, "journals": report.files}
    counts["never_ended"] = len(report.unmatched_starts)
    if report.syntheses == 0:
        return Verdict("I1", "cap", UNKNOWN, rule, "no synthesis ran", f"<= {evidence.limit}")
    measured = f"peak {report.peak} in flight ({report.syntheses} syntheses)"
    if not report.violates(evidence.limit):
        return Verdict("I1", "cap", PASS, rule, measured, f"<= {evidence.limit}", counts)
    return Verdict(
        "I1",
        "cap",
        FAIL,
        rule,
        measured,
        f"<= {evidence.limit}",
        counts,
        _over_the_cap(evidence, evidence.journal_dir),
    )


def _over_the_cap(evidence: Evidence, journal_dir: Path) -> list[str]:
    """The first moments the journals show more than the limit running, with who ran."""
    events, _ = read_events(journal_dir)
    events.sort(key=lambda e: (e[0], e[1]))
    running: set[tuple[str, str, str]] = set()
    examples: list[str] = []
    for stamp, delta, synthesis in events:
        if delta > 0:
            running.add(synthesis)
            if len(running) > evidence.limit and len(examples) < MAX_EXAMPLES:
                who = ", ".join(f"task {task} (pid {pid})" for pid, task, _ in sorted(running))
                examples.append(f"at {_at(evidence, stamp / 1e9)}: {len(running)} running: {who}")
        else:
            running.discard(synthesis)
    return examples


def judge_cap_from_permits(evidence: Evidence) -> Verdict:
    """I1 against a deployment without journals: sampled permit holders (weaker)."""
    rule = "permit holders sampled from /api/monitor/permits never above the limit"
    note = (
        "weaker than the journal check: samples miss what happens between them, and they count "
        "the semaphore's own bookkeeping, not syntheses"
    )
    held = [s for s in evidence.samples if s.holders is not None]
    if not held:
        return Verdict("I1", "cap", UNKNOWN, rule, "no sample", f"<= {evidence.limit}", note=note)
    peak = max(s.holders or 0 for s in held)
    over = [s for s in held if (s.holders or 0) > s.limit]
    counts = {"samples": len(held), "peak": peak}
    measured = f"peak {peak} holders in {len(held)} samples"
    examples = [
        f"at {_at(evidence, s.t)}: {s.holders} holders of {s.limit} on {s.worker}"
        for s in over[:MAX_EXAMPLES]
    ]
    status = FAIL if over else PASS
    return Verdict(
        "I1", "cap", status, rule, measured, f"<= {evidence.limit}", counts, examples, note
    )


def judge_visibility(evidence: Evidence) -> Verdict:
    """I2: after a 202, every read of the task, on any worker, finds it (never 404)."""
    rule = "every status read and stream of an accepted task answers it (no 404)"
    accepted = evidence.accepted()
    misses: list[str] = []
    reads = elsewhere = unknown = 0
    for record in [*evidence.of("read"), *evidence.of("stream")]:
        first = accepted.get(record["task"])
        if first is None or record.get("status") is None:
            continue
        if record["status"] == 421:
            # A degraded worker cannot know another worker's task: neither a hit nor a miss.
            unknown += 1
            continue
        reads += 1
        if record.get("worker") != first["worker"]:
            elsewhere += 1
        if record["status"] == 404:
            misses.append(
                f"task {record['task']} accepted by {first['worker']} at "
                f"{_at(evidence, first['t'])}: 404 from {record.get('worker')} at "
                f"{_at(evidence, record['t'])}"
            )
    counts = {"reads": reads, "on_other_workers": elsewhere, "not_found": len(misses),
              "unknown_while_degraded": unknown}  # fmt: skip
    measured = f"{len(misses)} of {reads} reads answered 404 ({elsewhere} on another worker)"
    if unknown:
        measured += f"; {unknown} answered 421, unknown while degraded"
    if misses:
        return Verdict("I2", "visibility", FAIL, rule, measured, "0", counts, misses[:MAX_EXAMPLES])
    if reads == 0 or (evidence.workers > 1 and elsewhere == 0):
        return Verdict(
            "I2", "visibility", UNKNOWN, rule, measured, "0", counts,
            note="no read reached a worker other than the one that took the task",
        )  # fmt: skip
    return Verdict("I2", "visibility", PASS, rule, measured, "0", counts)


def judge_monotonic(evidence: Evidence) -> Verdict:
    """I3: per observer (one poll loop, one stream), the version grows and the state never
    goes back; a stream's versions grow strictly and it ends at a terminal state."""
    rule = "per poller and per stream: version only grows, state never goes back"
    problems: list[str] = []
    observers = 0
    for observer, reads in evidence.reads_by_observer().items():
        seen = [(r["version"], r["state"]) for r in reads if r.get("status") == 200]
        if not seen:
            continue
        observers += 1
        for problem in monotonic_violations(seen):
            problems.append(f"{observer} on task {reads[0]['task']}: {problem}")
    streams: dict[str, list[Record]] = defaultdict(list)
    for record in evidence.of("stream"):
        # 204: a resumed stream whose client had seen the end already (an empty, ended part).
        if record.get("status") in (200, 204):
            streams[record["obs"]].append(record)
    resumed = resumed_to_the_end = 0
    for observer, parts in streams.items():
        observers += 1
        seen = [(event[0], event[1]) for part in parts for event in part["events"]]
        complete = parts[-1]["ended"]
        check = stream_violations if complete else monotonic_violations
        for problem in check(seen):
            problems.append(f"{observer} on task {parts[0]['task']}: {problem}")
        if len(parts) > 1:  # left after its first event, came back with Last-Event-ID
            resumed += 1
            resumed_to_the_end += bool(complete and seen and seen[-1][1] in ("done", "failed"))
    counts = {
        "observers": observers,
        "violations": len(problems),
        "resumed_streams": resumed,
        "resumed_to_the_end": resumed_to_the_end,
    }
    measured = (
        f"{len(problems)} steps back in {observers} observers ({resumed} streams resumed with "
        f"Last-Event-ID, {resumed_to_the_end} of them to their end with no version repeated)"
    )
    if problems:
        return Verdict(
            "I3", "monotonic", FAIL, rule, measured, "0", counts, problems[:MAX_EXAMPLES]
        )
    if observers == 0:
        return Verdict("I3", "monotonic", UNKNOWN, rule, measured, "0", counts)
    return Verdict("I3", "monotonic", PASS, rule, measured, "0", counts)


def judge_idempotency(evidence: Evidence) -> Verdict:
    """I4: one key and one payload make one task, however many POSTs; another payload under a
    taken key is refused (422) and makes none."""
    rule = "one key + one payload: exactly one task id; another payload under it: 422"
    by_key: dict[str, set[str]] = defaultdict(set)
    posts: dict[str, int] = defaultdict(int)
    for record in evidence.of("accepted"):
        if record.get("key"):
            by_key[record["key"]].add(record["task"])
            posts[record["key"]] += 1
    unsure = sum(1 for r in evidence.of("unsure") if r.get("key"))
    problems = [
        f"key {key}: {len(ids)} tasks {sorted(ids)[:3]}"
        for key, ids in by_key.items()
        if len(ids) > 1
    ]
    conflicts = [r for r in evidence.of("idem") if not r["same"]]
    answered = [r for r in conflicts if r.get("status") is not None]
    for record in answered:
        if record["status"] != 422:
            problems.append(
                f"key {record['key']}: another payload answered {record['status']} "
                f"(task {record.get('task')}), not 422"
            )
    contested = sum(1 for key in by_key if posts[key] > 1)
    counts = {
        "keys": len(by_key),
        "keys_posted_more_than_once": contested,
        "accepted_posts": sum(posts.values()),
        "may_have_happened": unsure,
        "conflicting_payloads": len(answered),
        "violations": len(problems),
    }
    measured = (
        f"{len(problems)} violations over {len(by_key)} keys ({contested} posted more than once, "
        f"{unsure} posts unanswered); {len(answered)} conflicting payloads"
    )
    if problems:
        return Verdict(
            "I4", "idempotency", FAIL, rule, measured, "0", counts, problems[:MAX_EXAMPLES]
        )
    if contested == 0:
        return Verdict(
            "I4", "idempotency", UNKNOWN, rule, measured, "0", counts,
            note="no key was posted more than once",
        )  # fmt: skip
    return Verdict("I4", "idempotency", PASS, rule, measured, "0", counts)


def judge_liveness(evidence: Evidence) -> Verdict:
    """I5: every accepted task ends done or failed (the final sweep).

    A task the sweep never read (the run was interrupted first) is unknown, not live.
    """
    rule = "every accepted task ends done or failed by the end of the drain"
    accepted = evidence.accepted()
    if evidence.sweep is None:
        return Verdict(
            "I5", "liveness", UNKNOWN, rule, "no sweep ran", "0 live",
            {"accepted": len(accepted)}, note="the run ended before its final sweep",
        )  # fmt: skip
    live: list[str] = []
    ends: dict[str, int] = defaultdict(int)
    unread = 0
    for task_id, first in accepted.items():
        found = evidence.sweep.get(task_id)
        if found is None or not found.statuses:
            unread += 1
            continue
        state = found.state
        ends[state or "never found"] += 1
        if state not in ("done", "failed"):
            where = found.worker or first["worker"]
            seen = state or "never found"
            live.append(f"task {task_id} (accepted by {first['worker']}): {seen} on {where}")
    counts: dict[str, int | float] = {"accepted": len(accepted), **ends, "unread": unread}
    counts["may_have_happened"] = len(evidence.of("unsure"))
    measured = ", ".join(f"{n} {state}" for state, n in sorted(ends.items())) or "no task"
    if unread:
        measured += f"; {unread} not read by the sweep"
    if live:
        return Verdict(
            "I5", "liveness", FAIL, rule, measured, "0 live", counts, live[:MAX_EXAMPLES]
        )
    if not accepted or unread:
        return Verdict("I5", "liveness", UNKNOWN, rule, measured, "0 live", counts)
    return Verdict("I5", "liveness", PASS, rule, measured, "0 live", counts)


def judge_degradation() -> Verdict:
    return Verdict(
        "I6", "degradation", NOT_JUDGED,
        "with Redis cut: no 5xx, degraded reported, the cap as the fallback policy promises",
        "-", "-", note="a load run keeps Redis up; `nox -s chaos` cuts it",
    )  # fmt: skip


def judge_events(evidence: Evidence) -> Verdict:
    """I7: a stream on any worker gets the terminal event of a task that ran on another."""
    rule = "a stream on a worker other than the task's gets its terminal event"
    crossed = delivered = stopped = 0
    problems: list[str] = []
    streams: dict[str, list[Record]] = defaultdict(list)
    for record in evidence.of("stream"):
        streams[record["obs"]].append(record)
    for parts in streams.values():
        last = parts[-1]
        if last.get("left_early"):
            continue  # it never came back (its first part had no id to resume from)
        if last.get("outcome") == "stopped":
            stopped += 1  # still open when Locust stopped its users: no verdict either way
            continue
        task_id = last["task"]
        ran_on = _ran_on(evidence, task_id, parts)
        terminal = [e for part in parts for e in part["events"] if e[1] in ("done", "failed")]
        if last.get("worker") is None or ran_on is None or last.get("worker") == ran_on:
            continue
        crossed += 1
        if terminal:
            delivered += 1
        else:
            problems.append(
                f"task {task_id} ran on {ran_on}: stream on {last.get('worker')} opened at "
                f"{_at(evidence, last['t'])} ended {last.get('outcome')} "
                f"(HTTP {last.get('status')}) without its terminal event"
            )
    counts = {"cross_worker_streams": crossed, "terminal_delivered": delivered, "stopped": stopped}
    measured = f"{delivered} of {crossed} cross-worker streams got the terminal event"
    if problems:
        return Verdict("I7", "events", FAIL, rule, measured, "all", counts, problems[:MAX_EXAMPLES])
    if crossed == 0:
        return Verdict("I7", "events", UNKNOWN, rule, measured, "all", counts)
    return Verdict("I7", "events", PASS, rule, measured, "all", counts)


def _ran_on(evidence: Evidence, task_id: str, parts: list[Record]) -> str | None:
    """The worker that ran the task: the sweep's answer, else a running or ended event's.

    A queued snapshot names the accepting worker, which need not be the one that ran it.
    """
    found = (evidence.sweep or {}).get(task_id)
    if found is not None and found.worker and found.state in ("running", "done", "failed"):
        return found.worker
    for part in parts:
        for event in part["events"]:
            if event[1] != "queued" and event[3]:
                return str(event[3])
    return None


def judge_all(evidence: Evidence, *, journals: bool) -> list[Verdict]:
    cap = judge_cap_from_journals(evidence) if journals else judge_cap_from_permits(evidence)
    return [
        cap,
        judge_visibility(evidence),
        judge_monotonic(evidence),
        judge_idempotency(evidence),
        judge_liveness(evidence),
        judge_degradation(),
        judge_events(evidence),
    ]
