"""The rehearsal's figures per phase, measured rather than judged: the calls made in each
(failed ones, 404s, latency) and the syntheses in flight (peak in all and per instance, time
above the limit), from the records, the journals and the timeline.

A failure belongs to the phase in which it ended (a stream cut by a switch is the switch's);
a synthesis whose worker is gone without its end line ended when its worker was gone.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from loadtests.evidence import Evidence, Record
from loadtests.rehearsal_timeline import INSTANCE_NAMES, Phase, Timeline
from loadtests.slo import percentile
from taskmon.harness.journal_check import read_events


def is_failed(record: Record) -> bool:
    status = record.get("status")
    return (status is not None and status >= 500) or record.get("outcome") in (
        "connection",
        "timeout",
    )


def calls_of(evidence: Evidence) -> list[Record]:
    """Every HTTP call and every stream (a stream Locust stopped excepted), and, as calls
    that failed, the runner's probes the service did not answer and the sweep's 5xx."""
    streams = [r for r in evidence.of("stream") if r.get("outcome") != "stopped"]
    probes = []
    for failure in evidence.probe_failures:
        server_error = failure.kind == "server error"
        probes.append(
            {"k": "probe", "t": failure.t, "t_end": failure.t_end,
             "name": "GET /api/monitor/stats (runner's probe)",
             "status": 500 if server_error else None, "detail": failure.detail,
             "outcome": "unexpected" if server_error else failure.kind, "worker": failure.instance}
        )  # fmt: skip
    swept = [
        {"k": "probe", "t": evidence.ended_at, "name": "GET /api/task/status/[id] (sweep)",
         "status": status, "outcome": "unexpected", "worker": None}
        for found in (evidence.sweep or {}).values()
        for status in found.statuses
        if status >= 500
    ]  # fmt: skip
    return [*evidence.of("req"), *streams, *probes, *swept]


def placed_at(record: Record) -> float:
    """When a call's outcome happened: a failure belongs to the phase it ended in (a stream
    cut by a switch is the switch's), a success to the one it started in."""
    if not is_failed(record):
        return float(record["t"])
    if "t_end" in record:
        return float(record["t_end"])
    return float(record["t"]) + float(record.get("ms") or 0.0) / 1000


def requests_by_phase(evidence: Evidence, timeline: Timeline) -> list[dict[str, Any]]:
    """Per phase (and the wind-down after the last): calls, failed ones, statuses, latency."""
    # Names repeat (two mixed holds, two "both memory"): number them in order.
    keyed = phase_keys(timeline)
    rows: dict[str, dict[str, Any]] = {
        key: {"phase": key, "switch": not phase.hold, "seconds": round(phase.end - phase.start, 1)}
        for key, phase in keyed
    }
    rows["wind-down"] = {"phase": "wind-down", "switch": False, "seconds": None}
    calls_in: dict[str, list[Record]] = {key: [] for key in rows}
    for record in calls_of(evidence):
        key = next((k for k, phase in keyed if phase.contains(placed_at(record))), "wind-down")
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
                "failed": sum(1 for r in calls if is_failed(r)),
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


def phase_keys(timeline: Timeline) -> list[tuple[str, Phase]]:
    keyed = []
    for number, phase in enumerate(timeline.phases, 1):
        kind = "hold" if phase.hold else "switch"
        keyed.append((f"{number}. {kind}: {phase.name}", phase))
    return keyed


def cap_figures(
    evidence: Evidence, timeline: Timeline | None, phases: list[Phase]
) -> list[dict[str, Any]]:
    """Per phase: the most syntheses in flight (all, and per instance when the timeline says
    whose pid is whose), and how long the total stayed above the limit."""
    if evidence.journal_dir is None:
        return []
    events = _journal_events(evidence.journal_dir, timeline)
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


def _journal_events(
    journal_dir: Path, timeline: Timeline | None
) -> list[tuple[int, int, tuple[str, str, str]]]:
    """The journals' start and end lines in time order, a synthesis whose worker is gone
    without its end line (killed at gunicorn's graceful timeout) ended when the worker was
    gone, instead of running to the end of the journal as the plain checker counts it."""
    events, _ = read_events(journal_dir)
    events.sort(key=lambda e: (e[0], e[1]))
    if timeline is None:
        return events
    gone = {
        pid: generation.gone
        for generation in timeline.generations
        if generation.gone is not None
        for pid in generation.pids
    }
    open_ones: dict[tuple[str, str, str], int] = {}
    for stamp, delta, synthesis in events:
        if delta > 0:
            open_ones[synthesis] = stamp
        else:
            open_ones.pop(synthesis, None)
    for synthesis, started in open_ones.items():
        pid = synthesis[0]
        ended = gone.get(int(pid)) if pid.isdigit() else None
        if ended is not None and ended * 1e9 > started:
            events.append((int(ended * 1e9), -1, synthesis))
    events.sort(key=lambda e: (e[0], e[1]))
    return events


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
