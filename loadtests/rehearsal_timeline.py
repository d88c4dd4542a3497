"""What happened when in a rehearsal: its phases, and which workers ran which backend.

The runner fills a Timeline as it goes (rehearsal.py); the judge (rehearsal_judge.py) reads
it to place every record, journal line and sample in a phase, and to tell, from a worker id
(`host:pid`), which instance and which backend that worker had. Times are CLOCK_MONOTONIC
seconds, the clock of the records and the journals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MEMORY, REDIS = "memory", "redis"
INSTANCE_NAMES = ("canary", "second")


@dataclass(frozen=True)
class Step:
    """One switch: an instance's workers replaced by workers on another backend."""

    name: str
    instance: int
    backend: str


# The gray release and its rollback, one instance at a time, canary first and last.
STEPS = (
    Step("canary to redis", 0, REDIS),
    Step("second to redis", 1, REDIS),
    Step("second back to memory", 1, MEMORY),
    Step("canary back to memory", 0, MEMORY),
)


@dataclass
class Phase:
    """A stretch of the run: a hold (every instance on a known backend) or a switch."""

    name: str
    start: float
    end: float
    backends: tuple[str, ...]  # per instance at the phase's start
    switching: int | None = None  # the instance being switched, for a switch phase

    @property
    def hold(self) -> bool:
        return self.switching is None

    @property
    def all_redis(self) -> bool:
        return self.hold and all(backend == REDIS for backend in self.backends)

    def contains(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass
class Generation:
    """The workers one instance ran between two switches, all on one backend."""

    instance: int
    backend: str
    pids: frozenset[int]
    born: float  # when its instance was signalled (or started)
    gone: float | None = None  # when its last worker had exited; None: alive at the end


@dataclass
class SwitchRecord:
    step: str
    instance: int
    backend: str
    signalled: float
    old_gone: float | None = None  # every old worker exited
    settled: float | None = None  # and every new worker answered with the new backend
    trouble: str | None = None


@dataclass
class Timeline:
    phases: list[Phase] = field(default_factory=list)
    generations: list[Generation] = field(default_factory=list)
    switches: list[SwitchRecord] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)  # per instance, canary first
    # Workers gunicorn forked outside a switch (it replaced one that died): (t, instance, pid).
    unplanned: list[tuple[float, int, int]] = field(default_factory=list)

    def generation_of(self, worker: str | None) -> Generation | None:
        """The generation a worker id (`host:pid`) belongs to, or None for a stranger."""
        pid = pid_of(worker)
        if pid is None:
            return None
        for generation in self.generations:
            if pid in generation.pids:
                return generation
        return None

    def backend_of(self, worker: str | None) -> str | None:
        generation = self.generation_of(worker)
        return None if generation is None else generation.backend

    def instance_of_pid(self, pid: int) -> int | None:
        for generation in self.generations:
            if pid in generation.pids:
                return generation.instance
        return None

    def phase_at(self, t: float) -> Phase | None:
        for phase in self.phases:
            if phase.contains(t):
                return phase
        return None

    def both_redis(self) -> Phase | None:
        return next((phase for phase in self.phases if phase.all_redis), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "phases": [asdict(phase) for phase in self.phases],
            "generations": [{**asdict(g), "pids": sorted(g.pids)} for g in self.generations],
            "switches": [asdict(switch) for switch in self.switches],
            "urls": self.urls,
            "unplanned_workers": self.unplanned,
        }


def pid_of(worker: str | None) -> int | None:
    """The pid in a worker id `host:pid`, or None when it is not one."""
    if not worker or ":" not in worker:
        return None
    tail = worker.rsplit(":", 1)[1]
    return int(tail) if tail.isdigit() else None
