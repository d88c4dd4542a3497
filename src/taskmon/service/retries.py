"""How the service rides out store outages: bounded retries of monitor calls and of permits.

Both retry only BackendUnavailable (the store did not answer), never a refusal, and both stop
early once the worker is closing, so a shutdown is never held up by an outage longer than it
would be by one retry window.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from taskmon.ports import BackendUnavailable, Holder, Lease, PermitTimeout, Semaphore

log = logging.getLogger(__name__)


def store_call(*, window_s: float, closing: Callable[[], bool], patient: bool = False) -> Retrying:
    """A call to the monitor that rides out store outages of up to `window_s`.

    `patient`: the outcome of work already done is worth waiting for, so it is retried until
    the store answers, or, once `closing()` is true, `window_s` at most. The last
    BackendUnavailable is re-raised when the retries stop.
    """
    deadline = stop_after_delay(window_s)

    def stop(state: RetryCallState) -> bool:
        return deadline(state) and (closing() or not patient)

    def warn(state: RetryCallState) -> None:
        if state.attempt_number == 1:
            what = getattr(state.fn, "__name__", "the call")
            log.warning("the task store does not answer; retrying %s", what)

    return Retrying(
        stop=stop,
        wait=wait_exponential(multiplier=0.05, max=1.0),
        retry=retry_if_exception_type(BackendUnavailable),
        before_sleep=warn,
        reraise=True,
    )


def acquire_permit(
    semaphore: Semaphore, holder: Holder, *, timeout_s: float, closing: Callable[[], bool]
) -> Lease:
    """Wait for a permit for up to `timeout_s`, riding out store outages.

    The task id is the owner token, so an acquire retried after an outage (or after a reply
    lost in one) can never take a second permit. Raises PermitTimeout when the time is up or
    `closing()` became true first.
    """
    deadline = time.monotonic() + timeout_s
    pause = 0.05
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or closing():
            raise PermitTimeout(f"no permit within {timeout_s:.3g} s")
        try:
            return semaphore.acquire(holder, timeout=remaining, token=holder.task_id)
        except BackendUnavailable as exc:
            log.warning("task %s: %s; retrying the permit", holder.task_id, exc)
            time.sleep(min(pause, remaining))
            pause = min(1.0, pause * 2)
