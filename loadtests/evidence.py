"""Everything a run leaves behind, read back in one place for the verdicts and the report.

Sources, none of them the service's own counters: the users' records (recording.py), the
runner's samples of /api/monitor/stats and /api/monitor/permits, the final status sweep, and
the synthesis journals (TASKMON_JOURNAL_DIR) of a stack the runner started.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Record = dict[str, Any]


@dataclass
class Sample:
    """One read of a worker's stats and permits by the runner's sampler."""

    t: float
    instance: str
    worker: str
    backend: str | None
    queued: int
    running: int
    in_use: int
    limit: int
    holders: int | None = None  # from /api/monitor/permits


@dataclass(frozen=True)
class ProbeFailure:
    """A sample the service did not answer: no connection, no answer in time, or a 5xx."""

    t: float
    instance: str
    kind: str  # connection | timeout | server error
    detail: str
    t_end: float  # when it failed: a timeout belongs to the phase it ran out in


@dataclass
class SweepResult:
    """What the final sweep found of one accepted task."""

    task: str
    state: str | None  # None: never answered 200 within the drain
    worker: str | None
    statuses: list[int] = field(default_factory=list)  # every status code the sweep got


@dataclass
class Evidence:
    records: list[Record] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    probe_failures: list[ProbeFailure] = field(default_factory=list)  # samples not answered
    sweep: dict[str, SweepResult] | None = None  # None: the run ended before its sweep
    journal_dir: Path | None = None
    limit: int = 0
    workers: int = 1  # worker processes in all, every instance
    started_at: float = 0.0  # monotonic time the load began
    ended_at: float = 0.0

    def of(self, kind: str) -> list[Record]:
        return [record for record in self.records if record["k"] == kind]

    def accepted(self) -> dict[str, Record]:
        """task id -> its first acceptance (a replayed key answers the same task again)."""
        first: dict[str, Record] = {}
        for record in self.of("accepted"):
            first.setdefault(record["task"], record)
        return first

    def reads_by_observer(self) -> dict[str, list[Record]]:
        observers: dict[str, list[Record]] = defaultdict(list)
        for record in self.of("read"):
            observers[record["obs"]].append(record)
        return observers


def read_records(directory: Path) -> list[Record]:
    """Every line of every records-*.jsonl; a torn last line (a killed writer) is skipped."""
    records: list[Record] = []
    for path in sorted(directory.glob("records-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    records.sort(key=lambda record: record.get("t", 0.0))
    return records
