"""Which Redis failures mean "Redis cannot serve this now", and the one way adapters say so.

Every Redis adapter (monitor, hub, semaphore, worker registry, subscriber) translates the same
set into BackendUnavailable, which callers treat as an expected outage: degrade, retry, answer
503, log one line without a traceback. Anything else a Redis call raises (a ResponseError from a
broken script, a wrong password) is a fault of ours or of the deployment and stays what it is;
a command the ACL user may not run is one of those, and is also logged once per process as an
ERROR saying what to grant (`report_acl_refusal`), since the traceback alone reads like a bug.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import redis

from taskmon.ports import BackendRefused, BackendUnavailable
from taskmon.redis.diagnosis import ACL_FILE, refused_by_acl
from taskmon.redis.scripts import failing_line

log = logging.getLogger(__name__)

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


_reported_lock = threading.Lock()
_reported: set[str] = set()


def report_acl_refusal(action: str, exc: BaseException) -> None:
    """Log, once per distinct refusal in this process, that the ACL user lacks a right."""
    with _reported_lock:
        if str(exc) in _reported:
            return
        _reported.add(str(exc))
    where = failing_line(str(exc))
    log.error(
        "Redis refused a command, key or channel to the user of TASKMON_REDIS_URL while %s "
        "(%s%s): give that user the rules of %s, whose key and channel patterns ~{prefix}:* and "
        "&{prefix}:* must name TASKMON_KEY_PREFIX; until then every call that needs it fails",
        action,
        exc,
        f"; in {where}" if where else "",
        ACL_FILE,
    )


class RefusedByAcl(redis.ResponseError, BackendRefused):
    """An ACL refusal as both what it is to redis-py (a ResponseError, which callers that
    expect one still catch) and what it is to the ports (BackendRefused: a 503, no traceback)."""


@contextlib.contextmanager
def unavailable_as(action: str, consequence: str = "") -> Iterator[None]:
    """Re-raise any of UNAVAILABLE_ERRORS inside the block as BackendUnavailable; report an
    ACL refusal once and re-raise it as RefusedByAcl (the same text)."""
    try:
        yield
    except UNAVAILABLE_ERRORS as exc:
        raise unavailable(action, exc, consequence) from exc
    except RefusedByAcl:
        raise
    except redis.ResponseError as exc:
        if refused_by_acl(exc):
            report_acl_refusal(action, exc)
            raise RefusedByAcl(str(exc)) from exc
        raise
