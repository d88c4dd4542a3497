"""Steady client load on a real stack while a fault is applied, and what it measured.

`OutageDrill` runs submitters (POST /api/tts), readers (GET status of accepted tasks) and a
sampler (GET /api/monitor/stats, which says per worker whether it runs degraded and, while it
does, its share of the cap), each call on a fresh connection so any worker may answer. Every
answer is kept with its CLOCK_MONOTONIC stamp (the clock the synthesis journal uses), so the
figures can be cut by phase: before the fault, during it, after the recovery.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskmon.harness.client import call
from taskmon.harness.journal_check import read_events


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


@dataclass(frozen=True)
class Seen:
    at_ns: int
    kind: str  # post, status, stats
    status: int  # 0: the connection failed or timed out
    worker: str = ""
    body: Any = None


@dataclass
class OutageDrill:
    base_urls: list[str]
    # Enough to keep every permit busy (a queue on every worker), so a broken share shows.
    submitters: int = 8
    readers: int = 2
    pause_s: float = 0.1
    seen: list[Seen] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> OutageDrill:
        loops = [self._submit] * self.submitters + [self._read] * self.readers + [self._sample]
        for loop in loops:
            thread = threading.Thread(target=loop, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _call(self, kind: str, method: str, path: str, body: Any = None) -> Seen:
        try:
            base_url = random.choice(self.base_urls)  # one of the hosts, any of its workers
            answer = call(base_url, method, path, body, timeout=10)
            seen = Seen(now_ns(), kind, answer.status, answer.worker, answer.body)
        except Exception as exc:  # no answer, or not one a client could read: a failure
            seen = Seen(now_ns(), kind, 0, body=repr(exc))
        with self._lock:
            self.seen.append(seen)
        return seen

    def _submit(self) -> None:
        rng = random.Random()
        while not self._stop.is_set():
            text = "drill " + "x" * rng.randint(8, 20)
            seen = self._call("post", "POST", "/api/tts", {"text": text})
            if seen.status == 202:
                with self._lock:
                    self.accepted.append(seen.body["task_id"])
            self._stop.wait(self.pause_s)

    def _read(self) -> None:
        rng = random.Random()
        while not self._stop.is_set():
            with self._lock:
                task_id = rng.choice(self.accepted) if self.accepted else None
            if task_id is not None:
                self._call("status", "GET", f"/api/task/status/{task_id}")
            self._stop.wait(0.02)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._call("stats", "GET", "/api/monitor/stats")
            self._stop.wait(0.05)

    # -- what it measured ------------------------------------------------------------------

    def workers_seen(self, kind: str = "stats") -> set[str]:
        return {s.worker for s in self.seen if s.kind == kind and s.status == 200}

    def degraded_at(self, worker: str, *, after_ns: int) -> int | None:
        """When `worker` first answered degraded after `after_ns`."""
        for s in self._stats_of(worker, after_ns):
            if s.body.get("degraded"):
                return s.at_ns
        return None

    def healthy_at(self, worker: str, *, after_ns: int) -> int | None:
        for s in self._stats_of(worker, after_ns):
            if not s.body.get("degraded"):
                return s.at_ns
        return None

    def shares(self, *, between: tuple[int, int]) -> dict[str, int]:
        """Each worker's share of the cap, as it said while degraded."""
        found: dict[str, int] = {}
        for s in self.seen:
            inside = between[0] <= s.at_ns <= between[1]
            if s.kind == "stats" and s.status == 200 and inside and s.body.get("degraded"):
                found[s.worker] = int(s.body["concurrency"]["limit"])
        return found

    def _stats_of(self, worker: str, after_ns: int) -> list[Seen]:
        return [
            s for s in self.seen
            if s.kind == "stats" and s.status == 200 and s.worker == worker and s.at_ns > after_ns
        ]  # fmt: skip

    def failures(self) -> list[Seen]:
        """5xx answers and calls that got no answer at all."""
        return [s for s in self.seen if s.status == 0 or s.status >= 500]

    def unexpected(self, *, rejecting: bool) -> list[Seen]:
        """Answers that are neither a success nor a documented degraded-mode answer: a 404 of
        an accepted task, a 421 without its slug, a 429 that is not queue-full (or, under
        `reject`, degraded-rejecting), anything else."""
        allowed = {421: {"task-unknown-while-degraded"}, 429: {"queue-full"}}
        if rejecting:
            allowed[429].add("degraded-rejecting")
        odd = []
        for s in self.seen:
            if s.status in (200, 202):
                continue
            slug = (
                str(s.body.get("type", "")).rsplit(":", 1)[-1] if isinstance(s.body, dict) else ""
            )
            if slug not in allowed.get(s.status, set()):
                odd.append(s)
        return odd

    def starts_between(self, journal: Path, start_ns: int, end_ns: int) -> int:
        events, _ = read_events(journal)
        return sum(1 for t, delta, _ in events if delta > 0 and start_ns <= t <= end_ns)

    def statuses(self) -> dict[str, dict[int, int]]:
        counted: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        for s in self.seen:
            counted[s.kind][s.status] += 1
        return {kind: dict(by_status) for kind, by_status in counted.items()}


def running_at(journal: Path, at_ns: int) -> dict[str, int]:
    """Syntheses running at `at_ns`, per worker pid, from the journal."""
    events, _ = read_events(journal)
    running: dict[tuple[str, str, str], bool] = {}
    for stamp, delta, synthesis in sorted(events, key=lambda e: (e[0], e[1])):
        if stamp > at_ns:
            break
        if delta > 0:
            running[synthesis] = True
        else:
            running.pop(synthesis, None)
    per_pid: dict[str, int] = defaultdict(int)
    for pid, _, _ in running:
        per_pid[pid] += 1
    return dict(per_pid)


def peak_between(journal: Path, start_ns: int, end_ns: int) -> int:
    """The most syntheses running at once at any instant in [start_ns, end_ns]."""
    events, _ = read_events(journal)
    running: set[tuple[str, str, str]] = set()
    peak = 0
    for stamp, delta, synthesis in sorted(events, key=lambda e: (e[0], e[1])):
        if delta > 0:
            running.add(synthesis)
        else:
            running.discard(synthesis)
        if start_ns <= stamp <= end_ns:
            peak = max(peak, len(running))
    return peak
