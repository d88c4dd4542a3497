"""The I3 checker: on any worker and any stream, a task's version only grows and its state
never goes back. Observations are (version, state) pairs in the order one observer saw them.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

STATE_ORDER = {"queued": 0, "running": 1, "done": 2, "failed": 2}


def monotonic_violations(observations: Iterable[tuple[int, str]]) -> list[str]:
    """Every step where the version fell or the state went back; empty when I3 holds.

    A repeated observation (same version) is allowed for polling; a stream must not repeat,
    which `strict=True` checks in `stream_violations`.
    """
    problems = []
    previous: tuple[int, str] | None = None
    for version, state in observations:
        if state not in STATE_ORDER:
            problems.append(f"unknown state {state!r} at version {version}")
        if previous is not None:
            last_version, last_state = previous
            if version < last_version:
                problems.append(f"version went back {last_version} -> {version}")
            elif version == last_version and state != last_state:
                problems.append(f"version {version} named two states {last_state}, {state}")
            if STATE_ORDER.get(state, 0) < STATE_ORDER.get(last_state, 0):
                problems.append(f"state went back {last_state} -> {state}")
            if last_state in ("done", "failed") and state != last_state:
                problems.append(f"terminal {last_state} changed to {state}")
        previous = (version, state)
    return problems


def stream_violations(observations: list[tuple[int, str]]) -> list[str]:
    """As monotonic_violations, plus: strictly growing versions and a terminal last event."""
    problems = monotonic_violations(observations)
    versions = [version for version, _ in observations]
    if any(b <= a for a, b in pairwise(versions)):
        problems.append(f"stream versions not strictly growing: {versions}")
    if not observations or observations[-1][1] not in ("done", "failed"):
        problems.append("stream did not end with a terminal state")
    return problems
