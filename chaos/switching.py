"""The failover's side of a chaos run: when each worker says it switched, and what the
policy allowed meanwhile.

Each worker logs one line when it degrades ("Redis at ... stopped answering") and one when it
is back ("... answers again"), stamped to the millisecond: its own account of detection and
re-promotion, and the moment its carried syntheses are read from the journals for the
policy's bound.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from typing import Any

from chaos.concurrency import partition_bound, running_per_pid, series
from chaos.evidence import FAIL, PASS, UNKNOWN, ChaosEvidence, Check
from chaos.faults import Window
from chaos.scenarios import DETECT_BOUND_S, LOG_LINES_PER_OUTAGE, REPROMOTE_BOUND_S

# After a worker re-promotes it admits nothing new through Redis for two probe intervals and
# a call budget (2.8 s), so workers that come back later have re-registered their permits.
SETTLE_S = 2.8 + 0.5

_SWITCH = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \[(\d+)\] WARNING taskmon\.failover\.switch: "
    r"Redis at \S+ (stopped answering|answers again)",
    re.M,
)
_WARNING = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \[(\d+)\] (?:WARNING|ERROR) taskmon", re.M
)


def _stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def switches(logs: dict[int, str]) -> dict[int, list[tuple[float, str]]]:
    """pid -> [(wall time, "down" | "up")] from every failover switch line."""
    found: dict[int, list[tuple[float, str]]] = {}
    for text in logs.values():
        for stamp, pid, what in _SWITCH.findall(text):
            kind = "down" if what == "stopped answering" else "up"
            found.setdefault(int(pid), []).append((_stamp(stamp), kind))
    return found


def _trip_times(evidence: ChaosEvidence, window: Window) -> dict[int, float]:
    """Monotonic time each cut worker went degraded for `window` (the fault's start if it
    was degraded already)."""
    found: dict[int, float] = {}
    for pid, events in switches(evidence.logs).items():
        if pid not in evidence.cut_pids:
            continue
        before = [kind for wall, kind in events if wall < window.start_wall]
        if before and before[-1] == "down":
            found[pid] = window.start
            continue
        end_wall = window.end_wall or window.start_wall + 60
        downs = [wall for wall, kind in events if kind == "down" and wall <= end_wall + 1]
        downs = [wall for wall in downs if wall >= window.start_wall - 0.05]
        if downs:
            found[pid] = evidence.wall_to_mono(downs[0])
    return found


def _back_times(evidence: ChaosEvidence, window: Window) -> dict[int, float]:
    found: dict[int, float] = {}
    if window.end_wall is None:
        return found
    for pid, events in switches(evidence.logs).items():
        if pid in evidence.cut_pids:
            ups = [wall for wall, kind in events if kind == "up" and wall >= window.end_wall - 0.05]
            if ups:
                found[pid] = evidence.wall_to_mono(ups[0])
    return found


def fault_regions(evidence: ChaosEvidence) -> list[tuple[float, float, int, str]]:
    """(start, end, bound, why) for every stretch where the policy allows more than the limit."""
    regions = []
    limit, scenario = evidence.limit, evidence.scenario
    if scenario.fault == "freeze-worker":
        window = evidence.windows[0]
        end = (window.end or window.start) + 1.0
        bound = limit + evidence.held_by_victim
        regions.append((window.start, end, bound, "the frozen worker's syntheses past their lease"))
        return regions
    if not scenario.redis_fault:
        return regions
    every_worker_cut = len(scenario.cut_instances) == scenario.instances
    for window in evidence.windows:
        trips = _trip_times(evidence, window)
        backs = _back_times(evidence, window)
        carried = [
            running_per_pid(evidence.journal_dir, at).get(pid, 0) for pid, at in trips.items()
        ]
        cut = len(evidence.cut_pids)
        if evidence.policy == "partition":
            degraded = partition_bound(limit, evidence.workers, carried, among=cut)
        else:
            degraded = sum(carried)  # reject grants nothing new: only what was carried runs
        if not every_worker_cut:
            degraded += limit  # the others keep Redis and its whole cap
        end = max(backs.values(), default=(window.end or window.start) + REPROMOTE_BOUND_S)
        regions.append((window.start, end + SETTLE_S, max(degraded, limit), window.name))
    # An outage that starts while the previous one settles takes over from its start: what
    # runs then is carried into it, and its own bound counts it.
    return [
        (start, min(end, regions[i + 1][0]) if i + 1 < len(regions) else end, bound, why)
        for i, (start, end, bound, why) in enumerate(regions)
    ]


def judge_cap(evidence: ChaosEvidence) -> Check:
    rule = (
        "syntheses in flight (journals) within the limit, and within the policy's bound "
        "from each fault until its re-promotion has settled"
    )
    if not any(evidence.journal_dir.glob("journal-*.jsonl")):
        return Check("cap", UNKNOWN, rule, "no journal")
    flight = series(evidence.journal_dir, evidence.deaths)
    regions = fault_regions(evidence)
    start, end = evidence.load_start, evidence.load_end
    figures: dict[str, Any] = {"limit": evidence.limit, "regions": []}
    broken = []
    cursor = start
    for r_start, r_end, bound, why in regions:
        peak_in = flight.peak(r_start, r_end)
        figures["regions"].append({
            "fault": why, "bound": bound, "peak": peak_in,
            "seconds_above_limit": round(flight.seconds_above(evidence.limit, r_start, r_end), 3),
        })  # fmt: skip
        if peak_in > bound:
            broken.append(f"{peak_in} running against a bound of {bound} during {why}")
        if r_start > cursor:
            peak_out = flight.peak(cursor, r_start)
            if peak_out > evidence.limit:
                broken.append(f"{peak_out} running outside any fault (limit {evidence.limit})")
        cursor = max(cursor, r_end)
    if cursor < end and flight.peak(cursor, end) > evidence.limit:
        broken.append(
            f"{flight.peak(cursor, end)} running after the fault (limit {evidence.limit})"
        )
    figures["peak"] = flight.peak(start, end)
    figures["bound"] = max([r[2] for r in regions], default=evidence.limit)
    figures["peak_after"] = flight.peak(cursor, end) if cursor < end else None
    figures["seconds_above_limit"] = round(flight.seconds_above(evidence.limit, start, end), 3)
    figures["syntheses"] = flight.starts(start, end)
    measured = (
        f"peak {figures['peak']} against a bound of {figures['bound']} (limit "
        f"{evidence.limit}); {figures['seconds_above_limit']} s above the limit"
    )
    if broken:
        return Check("cap", FAIL, rule, measured, figures, "; ".join(broken))
    return Check("cap", PASS, rule, measured, figures)


def _switch_delays(evidence: ChaosEvidence, way: str) -> tuple[list[float], list[str]]:
    """Each cut worker's delay to degrade ("down", from each fault's start) or to come back
    ("up", from its end), and the workers that never did, for every outage."""
    delays, missing = [], []
    for window in evidence.windows:
        if way == "down":
            times, since, where = _trip_times(evidence, window), window.start, "in"
        else:
            times, since, where = _back_times(evidence, window), window.end or window.start, "after"
        for pid in sorted(evidence.cut_pids):
            if pid in times:
                delays.append(times[pid] - since)
            else:
                missing.append(f"{pid} {where} {window.name}")
    return delays, missing


def judge_detect(evidence: ChaosEvidence) -> Check:
    rule = f"every cut worker says it is degraded within {DETECT_BOUND_S:.0f} s of each fault"
    delays, missing = _switch_delays(evidence, "down")
    figures = {"max_s": round(max(delays), 3) if delays else None, "outages": len(evidence.windows)}
    if missing:
        return Check("detect", FAIL, rule, f"{len(missing)} never degraded", figures, missing[0])
    worst = max(delays)
    measured = f"slowest worker {worst:.3f} s over {len(evidence.windows)} outage(s)"
    status = PASS if worst <= DETECT_BOUND_S else FAIL
    return Check("detect", status, rule, measured, figures)


def judge_repromote(evidence: ChaosEvidence) -> Check:
    rule = f"every cut worker is back on Redis within {REPROMOTE_BOUND_S:.0f} s of it answering"
    delays, missing = _switch_delays(evidence, "up")
    figures = {"max_s": round(max(delays), 3) if delays else None}
    if missing:
        return Check("re-promote", FAIL, rule, f"{len(missing)} never back", figures, missing[0])
    worst = max(delays)
    status = PASS if worst <= REPROMOTE_BOUND_S else FAIL
    return Check("re-promote", status, rule, f"slowest worker {worst:.3f} s", figures)


def judge_log(evidence: ChaosEvidence) -> Check:
    rule = f"at most {LOG_LINES_PER_OUTAGE} warning lines per worker per outage, and no traceback"
    start = evidence.windows[0].start_wall - 0.5
    end = (evidence.windows[-1].end_wall or start) + REPROMOTE_BOUND_S + SETTLE_S
    per_pid: Counter[int] = Counter()
    for text in evidence.logs.values():
        for stamp, pid in _WARNING.findall(text):
            if start <= _stamp(stamp) <= end:
                per_pid[int(pid)] += 1
    tracebacks = sum(text.count("Traceback") for text in evidence.logs.values())
    outages = len(evidence.windows)
    worst = max(per_pid.values(), default=0) / outages
    figures = {"per_worker": dict(per_pid), "per_worker_per_outage": round(worst, 2),
               "tracebacks": tracebacks}  # fmt: skip
    measured = f"{worst:.1f} lines per worker per outage at most; {tracebacks} tracebacks"
    if tracebacks or worst > LOG_LINES_PER_OUTAGE:
        return Check("log", FAIL, rule, measured, figures)
    return Check("log", PASS, rule, measured, figures)


def judge_untouched(evidence: ChaosEvidence) -> Check:
    rule = "the instances whose Redis was not cut never degrade"
    others = {
        pid for index, pids in evidence.pids.items()
        if index not in evidence.scenario.cut_instances for pid in pids
    }  # fmt: skip
    tripped = [pid for pid, events in switches(evidence.logs).items()
               if pid in others and any(kind == "down" for _, kind in events)]  # fmt: skip
    said = [x for x in evidence.looks
            if x.instance not in evidence.scenario.cut_instances and x.degraded]  # fmt: skip
    measured = f"{len(tripped)} of {len(others)} degraded; {len(said)} reads said degraded"
    if tripped or said:
        return Check("others untouched", FAIL, rule, measured, where=f"pids {tripped}")
    return Check("others untouched", PASS, rule, measured)
