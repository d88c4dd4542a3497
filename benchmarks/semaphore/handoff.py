"""The handoff: A holds the only permit, B waits for it, A releases; how long until B has it.

The worker-side steps, run inside a worker on its semaphore; the parent-side sequence that
drives worker 0 as A and worker 1 as B is `handoff_run.measure`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .params import ACQUIRE_TIMEOUT_S, HANDOFF_SETTLE_S
from .subjects import Subject


@dataclass(frozen=True)
class Handoff:
    ns: int  # from just before A's release() to B's acquire() returning
    release_ns: int  # A's release() call alone (a round trip from an idle client)
    idle_evalsha_ns: int  # A's EVALSHA after HANDOFF_SETTLE_S idle, just before this handoff
    attempts: int | None  # acquire runs of B's acquire (1 = queued once, then handed the grant)
    released: bool


# -- in a worker ------------------------------------------------------------------------------


def idle_evalsha(call: Callable[[], object]) -> int:
    """One EVALSHA after HANDOFF_SETTLE_S idle, as A's release comes after its idle wait."""
    time.sleep(HANDOFF_SETTLE_S)
    started = time.monotonic_ns()
    call()
    return time.monotonic_ns() - started


def hold(sem: Subject, token: str) -> object:
    """A takes the only permit (it is free: the one who held it released it)."""
    held = sem.acquire(token, ACQUIRE_TIMEOUT_S)
    if held is None:
        raise RuntimeError("A could not take the free permit")
    return held


def wait(sem: Subject, token: str) -> tuple[int, int | None]:
    """B waits for the permit: when it was granted, and the acquire script runs it took."""
    before = sem.attempts
    held = sem.acquire(token, ACQUIRE_TIMEOUT_S)
    granted_ns = time.monotonic_ns()
    if held is None:
        raise RuntimeError(f"B waited {ACQUIRE_TIMEOUT_S:g} s and was never granted")
    sem.release(held)
    after = sem.attempts
    return granted_ns, None if after is None or before is None else after - before


def release(sem: Subject, lease: object) -> tuple[int, int, bool]:
    """A releases: when it started, when it returned, and what release() answered."""
    release_ns = time.monotonic_ns()
    released = sem.release(lease)
    return release_ns, time.monotonic_ns(), released
