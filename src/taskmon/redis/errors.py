"""Which Redis failures mean "Redis cannot serve this now", and the one way adapters say so.

Every Redis adapter (monitor, hub, semaphore, worker registry, subscriber) translates the same
set into BackendUnavailable, which callers treat as an expected outage: degrade, retry, answer
503, log one line without a traceback. Anything else a Redis call raises (a ResponseError from a
broken script, a wrong password) is a fault of ours or of the deployment and stays what it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis

from taskmon.ports import BackendUnavailable

# Connection refused, reset or timed out (BusyLoadingError, a Redis still loading its data, is a
# ConnectionError); a replica that refuses writes after a failover; an instance at maxmemory
# with the noeviction policy. Each clears by itself or by an operator, never by the caller.
UNAVAILABLE_ERRORS: tuple[type[redis.RedisError], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
)

_WHAT_TO_CHECK = (
    "check that TASKMON_REDIS_URL points at a running Redis, that Redis is up and healthy, "
    "and that it is a primary with memory to spare"
)


def unavailable(action: str, exc: BaseException, consequence: str = "") -> BackendUnavailable:
    """The BackendUnavailable to raise for `exc`, met while `action` (a gerund phrase)."""
    message = f"Redis did not answer while {action} ({type(exc).__name__}: {exc}); {_WHAT_TO_CHECK}"
    return BackendUnavailable(f"{message}. {consequence}" if consequence else message)


@contextlib.contextmanager
def unavailable_as(action: str, consequence: str = "") -> Iterator[None]:
    """Re-raise any of UNAVAILABLE_ERRORS inside the block as BackendUnavailable."""
    try:
        yield
    except UNAVAILABLE_ERRORS as exc:
        raise unavailable(action, exc, consequence) from exc
