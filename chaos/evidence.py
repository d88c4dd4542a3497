"""What a chaos run leaves for its checker, read back in one place, and what a check says.

Evidence, none of it the service's own counters: the Locust users' records (every call and
its answer), the watcher's reads of every worker's mode, each worker's log, the synthesis
journals, the final read of every accepted task from every instance, and the steady-state
steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chaos.faults import Window
from chaos.probes import Look, Step
from chaos.scenarios import Scenario

PASS, FAIL, UNKNOWN, SKIPPED = "pass", "fail", "unknown", "skipped"


@dataclass(frozen=True)
class TaskEnd:
    """How one accepted task ended, read from every instance after the run."""

    state: str | None
    error: str | None
    by_instance: dict[int, str]  # instance -> state, or the status code it answered


@dataclass
class ChaosEvidence:
    scenario: Scenario
    policy: str
    limit: int
    workers: int
    lease_ttl_s: float
    journal_dir: Path
    windows: list[Window] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    looks: list[Look] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    endings: dict[str, TaskEnd] | None = None  # None: never read (the run broke off)
    logs: dict[int, str] = field(default_factory=dict)  # instance -> its gunicorn log
    pids: dict[int, list[int]] = field(default_factory=dict)  # instance -> workers at the fault
    victim: int | None = None
    held_by_victim: int = 0
    deaths: dict[int, float] = field(default_factory=dict)
    load_start: float = 0.0
    load_end: float = 0.0
    redis_enabled: bool = True

    @property
    def cut_pids(self) -> set[int]:
        return {pid for i in self.scenario.cut_instances for pid in self.pids.get(i, [])}

    def wall_to_mono(self, wall: float) -> float:
        window = self.windows[0]
        return wall - window.start_wall + window.start


@dataclass
class Check:
    name: str
    status: str
    rule: str
    measured: str
    figures: dict[str, Any] = field(default_factory=dict)
    where: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
