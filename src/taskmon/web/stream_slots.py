"""How many SSE streams one worker process serves at once (TASKMON_SSE_MAX_STREAMS).

Each open stream holds one of gunicorn's threads for as long as it lasts; once every thread
is held, API requests queue behind streams that may last minutes. The bound refuses a stream
(503) instead, while threads are left for the short requests.
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask, current_app

from taskmon import metrics

log = logging.getLogger(__name__)

EXTENSION_KEY = "taskmon.stream_slots"
# The "limit reached" warning is repeated at most this often while streams are refused.
_WARN_EVERY_S = 60.0


class Slot:
    """One open stream's place. `release` gives it back once, however often it is called
    (a response's close callbacks, an error path and a HEAD may all call it)."""

    def __init__(self, owner: StreamSlots) -> None:
        self._owner = owner
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._owner._give_back()


class StreamSlots:
    """A bounded, thread-safe count of this process's open streams."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a stream limit must be at least 1, not {limit}")
        self.limit = limit
        self._open = 0
        self._lock = threading.Lock()
        self._warned_at: float | None = None

    @property
    def open(self) -> int:
        with self._lock:
            return self._open

    def try_take(self) -> Slot | None:
        """A slot, or None when `limit` streams are open (logged, at most once a minute)."""
        with self._lock:
            if self._open < self.limit:
                self._open += 1
                metrics.SSE_STREAMS_OPEN.inc()
                return Slot(self)
            now = time.monotonic()
            warn = self._warned_at is None or now - self._warned_at >= _WARN_EVERY_S
            if warn:
                self._warned_at = now
        metrics.SSE_STREAMS_REFUSED.inc()
        if warn:
            log.warning(
                "%d SSE streams open on this worker, its limit (TASKMON_SSE_MAX_STREAMS): new "
                "streams get 503 until one ends. Add workers, or raise TASKMON_THREADS with "
                "TASKMON_SSE_MAX_STREAMS",
                self.limit,
            )
        return None

    def _give_back(self) -> None:
        with self._lock:
            self._open -= 1
        metrics.SSE_STREAMS_OPEN.dec()


def attach(app: Flask, limit: int) -> None:
    app.extensions[EXTENSION_KEY] = StreamSlots(limit)


def stream_slots() -> StreamSlots:
    """The slots of the app handling the current request (one app per worker process)."""
    slots: StreamSlots = current_app.extensions[EXTENSION_KEY]
    return slots
