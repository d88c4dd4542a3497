"""The throughput window: what each worker runs between the common start and end instants.

Either EVALSHA calls of the trivial script, or acquire+release pairs on a CountingSemaphore.
Only operations that finish inside the window count; every grant counts for the scripts per
grant, slow acquires and timeouts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from taskmon.ports import Holder, PermitTimeout

from .counting import CountingSemaphore
from .params import ACQUIRE_TIMEOUT_S, RETRY_INTERVAL_S, SLOW_S


@dataclass(frozen=True)
class WindowSpec:
    """One timed measurement in one worker: EVALSHA calls, or acquire+release pairs."""

    kind: str  # "evalsha" or "sem"
    prefix: str = ""
    limit: int = 1
    retry_s: float = RETRY_INTERVAL_S


@dataclass
class Sample:
    """What one worker did inside the common window [start, end]."""

    op_ns: list[int] = field(default_factory=list)  # ops completed inside the window
    acquire_ns: list[int] = field(default_factory=list)  # the acquire part of those pairs
    grants: int = 0  # every granted acquire, inside the window or straddling its end
    attempts: int = 0  # runs of the acquire script behind those grants
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


def sem_loop(sem: CountingSemaphore, name: str, end_ns: int) -> Sample:
    sample = Sample()
    now, before = time.monotonic_ns, sem.attempts
    while now() < end_ns:
        token = uuid.uuid4().hex  # distinct tokens, shaped like the service's task ids
        holder = Holder(name, token)
        started = now()
        try:
            lease = sem.acquire(holder, timeout=ACQUIRE_TIMEOUT_S, token=token)
        except PermitTimeout:
            sample.timeouts += 1
            continue
        granted = now()
        released = sem.release(lease)
        done = now()
        sample.grants += 1
        sample.slow += granted - started > SLOW_S * 1e9
        sample.not_released += not released
        if done <= end_ns:
            sample.op_ns.append(done - started)
            sample.acquire_ns.append(granted - started)
    sample.attempts = sem.attempts - before
    return sample
