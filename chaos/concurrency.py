"""Syntheses in flight over time, from the synthesis journals alone (the cap's witness).

Every worker appends a start and an end line per synthesis, stamped with CLOCK_MONOTONIC.
A start with no end belongs to a worker that died: it counts as running until that worker's
death (when the run knows it: it killed the worker) or else until the journal's last line, so
the count errs towards flagging.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from taskmon.harness.journal_check import read_events

NS = 1_000_000_000


@dataclass(frozen=True)
class Series:
    """(t seconds, syntheses running from t on) at every change, in time order."""

    steps: list[tuple[float, int]]
    start_times: list[float]

    def at(self, t: float) -> int:
        count = 0
        for stamp, running in self.steps:
            if stamp > t:
                break
            count = running
        return count

    def peak(self, start: float, end: float) -> int:
        """The most running at once at any instant of [start, end]."""
        peak = self.at(start)
        for stamp, running in self.steps:
            if start <= stamp <= end:
                peak = max(peak, running)
        return peak

    def seconds_above(self, level: int, start: float, end: float) -> float:
        total = 0.0
        edges = [(start, self.at(start))] + [(t, n) for t, n in self.steps if start < t < end]
        edges.append((end, 0))
        for (t0, n0), (t1, _) in itertools.pairwise(edges):
            if n0 > level:
                total += t1 - t0
        return total

    def starts(self, start: float, end: float) -> int:
        """Syntheses that began within [start, end]."""
        return sum(1 for t in self.start_times if start <= t <= end)


def series(journal_dir: Path, deaths: dict[int, float] | None = None) -> Series:
    """The in-flight count over time; `deaths` (pid -> monotonic s) ends a dead worker's
    unended syntheses at its death."""
    events, _ = read_events(journal_dir)
    ended = {(who, delta) for _, delta, who in events if delta < 0}
    extra: list[tuple[int, int, tuple[str, str, str]]] = []
    last_ns = max((t for t, _, _ in events), default=0)
    for _, delta, who in events:
        if delta > 0 and (who, -1) not in ended:
            pid = int(who[0]) if who[0].isdigit() else None
            died = (deaths or {}).get(pid) if pid is not None else None
            extra.append((int(died * NS) if died is not None else last_ns, -1, who))
    timeline = sorted(events + extra, key=lambda e: (e[0], e[1]))
    steps: list[tuple[float, int]] = []
    running: set[tuple[str, str, str]] = set()
    for t, delta, who in timeline:
        if delta > 0:
            running.add(who)
        else:
            running.discard(who)
        steps.append((t / NS, len(running)))
    return Series(steps, sorted(t / NS for t, delta, _ in events if delta > 0))


def running_starts(journal_dir: Path, at: float | None = None) -> dict[int, list[float]]:
    """The start times (monotonic s) of the syntheses each worker pid was running at `at`
    (now, the journals' last line, when None)."""
    events, _ = read_events(journal_dir)
    running: dict[tuple[str, str, str], float] = {}
    for t, delta, who in sorted(events, key=lambda e: (e[0], e[1])):
        if at is not None and t / NS > at:
            break
        if delta > 0:
            running[who] = t / NS
        else:
            running.pop(who, None)
    per_pid: dict[int, list[float]] = defaultdict(list)
    for (pid, _, _), began in running.items():
        if pid.isdigit():
            per_pid[int(pid)].append(began)
    return dict(per_pid)


def running_per_pid(journal_dir: Path, at: float) -> dict[int, int]:
    """Syntheses each worker pid was running at `at` (monotonic s)."""
    return {pid: len(starts) for pid, starts in running_starts(journal_dir, at).items()}


def partition_bound(limit: int, workers: int, carried: list[int], among: int | None = None) -> int:
    """The most the partition policy lets `among` degraded workers (all `workers` if None) run
    at once: the sum of max(share, carried) with the shares (limit // workers, one more for
    limit % workers ranks) placed where they give the most, since the ranks are not known."""
    among = workers if among is None else among
    shares = sorted(
        (limit // workers + (1 if rank < limit % workers else 0) for rank in range(workers)),
        reverse=True,
    )[:among]
    loads = sorted([*carried, *[0] * among], reverse=True)[:among]
    # Largest shares with the smallest loads maximise the sum of the maxima.
    return sum(max(share, load) for share, load in zip(shares, reversed(loads), strict=True))
