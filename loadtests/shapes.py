"""Load shapes: stages of (until second, users, spawn rate), scaled by --users and --duration.

- smoke: a short, gentle run for CI (about a minute with the stack's start and the sweep);
- average: a steady, ordinary day;
- spike: a quiet base, a sudden crowd, and the way back;
- soak: a long, steady run that shows slow leaks and retention at work;
- steady: constant users until told to stop (the gray-release rehearsal's load).

The shapes name peak users and length; TASKMON_LOADTEST_USERS and TASKMON_LOADTEST_DURATION_S
rescale a shape without changing its form. When TASKMON_LOADTEST_STOP_FILE names a file, the
shape ends as soon as that file exists: the rehearsal stops the load when its steps are done.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

# A status poll or a stream gives up after this (the final sweep then judges the task); Locust
# lets a stopped user finish its task for a little longer.
TASK_DEADLINE_S = 30.0
# How long one HTTP call of a user waits for its answer (a timeout is "may have happened").
CALL_TIMEOUT_S = 10.0
STOP_FILE_ENV = "TASKMON_LOADTEST_STOP_FILE"
# A URL in front of the service (a fault proxy): RETRYING_USERS retrying submitters join the
# users (loadtests/retrying.py), on top of the shape's.
FRONT_ENV = "TASKMON_LOADTEST_FRONT"
RETRYING_USERS = 4


@dataclass(frozen=True)
class Stage:
    until_s: float
    users: int
    spawn_rate: float


@dataclass(frozen=True)
class Shape:
    name: str
    stages: tuple[Stage, ...]

    @property
    def duration_s(self) -> float:
        return self.stages[-1].until_s

    @property
    def peak_users(self) -> int:
        return max(stage.users for stage in self.stages)

    def scaled(self, users: int | None = None, duration_s: float | None = None) -> Shape:
        """The same form with another peak and length (each stage keeps its share of both)."""
        user_factor = (users / self.peak_users) if users else 1.0
        time_factor = (duration_s / self.duration_s) if duration_s else 1.0
        stages = tuple(
            Stage(
                until_s=stage.until_s * time_factor,
                users=max(1, math.ceil(stage.users * user_factor)),
                spawn_rate=max(1.0, stage.spawn_rate * user_factor),
            )
            for stage in self.stages
        )
        return Shape(self.name, stages)

    def at(self, elapsed_s: float) -> Stage | None:
        """The stage in force `elapsed_s` into the run, or None once it is over."""
        for stage in self.stages:
            if elapsed_s < stage.until_s:
                return stage
        return None


SHAPES = {
    "smoke": Shape("smoke", (Stage(10, 12, 4), Stage(45, 12, 4))),
    "average": Shape("average", (Stage(30, 40, 4), Stage(300, 40, 4))),
    "spike": Shape(
        "spike", (Stage(30, 10, 5), Stage(60, 80, 40), Stage(90, 80, 40), Stage(150, 10, 20))
    ),
    "soak": Shape("soak", (Stage(60, 20, 2), Stage(1800, 20, 2))),
    # Long enough for any rehearsal: it ends on its stop file, not its clock.
    "steady": Shape("steady", (Stage(3600, 12, 4),)),
}


def shape_from_env() -> Shape:
    """The shape the runner asked for, through TASKMON_LOADTEST_SHAPE, _USERS, _DURATION_S."""
    name = os.environ.get("TASKMON_LOADTEST_SHAPE", "smoke")
    if name not in SHAPES:
        raise ValueError(f"TASKMON_LOADTEST_SHAPE={name!r}: choose one of {', '.join(SHAPES)}")
    users = os.environ.get("TASKMON_LOADTEST_USERS")
    duration = os.environ.get("TASKMON_LOADTEST_DURATION_S")
    return SHAPES[name].scaled(int(users) if users else None, float(duration) if duration else None)
