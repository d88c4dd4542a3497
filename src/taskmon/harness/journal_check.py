"""Judge I1 (the cap) from synthesis journals alone: `python -m taskmon.harness.journal_check`.

Reads every journal-*.jsonl in a directory, sorts the start/end lines of all workers by their
CLOCK_MONOTONIC stamp, and sweeps them to find the most syntheses running at any instant.
A start without an end (a killed worker) counts as running until the journal's last line, so
the checker errs towards flagging. Journals from several hosts are only comparable when the
hosts share a clock (one machine, or network namespaces on one machine).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CapReport:
    peak: int = 0
    peak_at_ns: int | None = None
    syntheses: int = 0
    unmatched_starts: list[str] = field(default_factory=list)
    files: int = 0

    def violates(self, limit: int) -> bool:
        return self.peak > limit

    def summary(self, limit: int | None = None) -> str:
        verdict = ""
        if limit is not None:
            verdict = " VIOLATES" if self.violates(limit) else " within"
            verdict += f" the cap of {limit}"
        return (
            f"{self.syntheses} syntheses in {self.files} journals; peak {self.peak} running at "
            f"once{verdict}; {len(self.unmatched_starts)} never ended"
        )


Synthesis = tuple[str, str, str]  # (pid, task, fencing): one synthesis, even if a task repeats


def read_events(directory: Path) -> tuple[list[tuple[int, int, Synthesis]], int]:
    """(time_ns, +1 start / -1 end, synthesis) for every line, and how many files were read."""
    events: list[tuple[int, int, Synthesis]] = []
    files = sorted(directory.glob("journal-*.jsonl"))
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if entry["event"] == "abandoned":
                    continue  # a task failed at shutdown: no synthesis, no part of the cap
                delta = {"start": 1, "end": -1}[entry["event"]]
                who = (str(entry.get("pid")), str(entry["task"]), str(entry.get("fencing")))
                events.append((int(entry["t"]), delta, who))
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{path}:{number}: not a journal line ({exc})") from None
    return events, len(files)


def abandoned_tasks(directory: Path) -> set[str]:
    """The tasks a worker's shutdown failed as abandoned, by the journals' `abandoned` lines."""
    found: set[str] = set()
    for path in sorted(directory.glob("journal-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if '"abandoned"' in line:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("event") == "abandoned":
                    found.add(str(entry["task"]))
    return found


def check_cap(directory: Path) -> CapReport:
    events, files = read_events(directory)
    # At equal stamps, count ends before starts: a handoff at one instant is not an overlap.
    events.sort(key=lambda e: (e[0], e[1]))
    report = CapReport(files=files)
    running: set[Synthesis] = set()
    for stamp, delta, synthesis in events:
        if delta > 0:
            running.add(synthesis)
            report.syntheses += 1
            if len(running) > report.peak:
                report.peak, report.peak_at_ns = len(running), stamp
        else:
            running.discard(synthesis)
    report.unmatched_starts = sorted(task for _, task, _ in running)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--limit", type=int, required=True, help="the cap that must hold")
    args = parser.parse_args(argv)
    report = check_cap(args.directory)
    print(report.summary(args.limit))
    return 1 if report.violates(args.limit) else 0


if __name__ == "__main__":
    sys.exit(main())
