"""The throughput window: what each worker runs between the common start and end instants.

Either EVALSHA calls of the trivial script, or acquire+release pairs on a subject (taskmon's
semaphore or a peer), back to back or holding each permit a while (the fairness window). Only
operations that finish inside the window count; every grant counts for the scripts per grant,
slow acquires, the longest wait and timeouts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from .params import ACQUIRE_TIMEOUT_S, RETRY_INTERVAL_S, SLOW_S
from .subjects import TASKMON, Subject


@dataclass(frozen=True)
class WindowSpec:
    """One timed measurement in one worker: EVALSHA calls, or acquire+release pairs."""

    kind: str  # "evalsha" or "sem"
    prefix: str = ""
    limit: int = 1
    retry_s: float = RETRY_INTERVAL_S
    subject: str = TASKMON
    key_per_worker: bool = False  # a mutex's uncontended N-process window: a key each
    hold_s: float = 0.0  # how long each permit is held before its release


@dataclass
class Sample:
    """What one worker did inside the common window [start, end]."""

    op_ns: list[int] = field(default_factory=list)  # ops completed inside the window
    acquire_ns: list[int] = field(default_factory=list)  # the acquire part of those pairs
    grants: int = 0  # every granted acquire, inside the window or straddling its end
    attempts: int | None = 0  # acquire script runs behind those grants; None: not counted
    longest_wait_ns: int = 0  # the slowest grant's acquire
    slow: int = 0  # grants that took longer than SLOW_S
    timeouts: int = 0
    not_released: int = 0  # release() answered False (the lease had ended)


def pause_until(instant_ns: int) -> None:
    delay = (instant_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


def evalsha_loop(call: Callable[[], object], end_ns: int) -> Sample:
    sample = Sample()
    now, ops = time.monotonic_ns, sample.op_ns
    while (started := now()) < end_ns:
        call()
        done = now()
        if done <= end_ns:
            ops.append(done - started)
    return sample


def sem_loop(sem: Subject, end_ns: int, hold_s: float = 0.0) -> Sample:
    sample = Sample()
    now, before = time.monotonic_ns, sem.attempts
    while now() < end_ns:
        token = uuid.uuid4().hex  # distinct tokens, shaped like the service's task ids
        started = now()
        held = sem.acquire(token, ACQUIRE_TIMEOUT_S)
        if held is None:
            sample.timeouts += 1
            continue
        granted = now()
        if hold_s:
            time.sleep(hold_s)
        released = sem.release(held)
        done = now()
        sample.grants += 1
        sample.slow += granted - started > SLOW_S * 1e9
        sample.longest_wait_ns = max(sample.longest_wait_ns, granted - started)
        sample.not_released += not released
        if done <= end_ns:
            sample.op_ns.append(done - started)
            sample.acquire_ns.append(granted - started)
    after = sem.attempts
    sample.attempts = None if after is None or before is None else after - before
    return sample
