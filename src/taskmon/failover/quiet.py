"""A bounded log per outage: the first line of each kind passes, repeats are counted.

While a worker runs degraded, every Redis-touching part (subscriber, heartbeat, lease keeper,
semaphore listener) keeps failing and would log at its own pace for as long as the outage lasts.
This filter lets the first WARNING of each kind (logger and message template) through, without
a traceback (an outage is expected, not a bug), and counts the rest; the re-promotion line says
how many were held back. Errors and anything logged while Redis is healthy pass untouched.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable


class OutageLogFilter(logging.Filter):
    def __init__(self, degraded: Callable[[], bool]) -> None:
        super().__init__()
        self._degraded = degraded
        self._lock = threading.Lock()
        self._seen: set[tuple[str, object]] = set()
        self._held_back = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING or not self._degraded():
            return True
        kind = (record.name, record.msg)
        with self._lock:
            if kind in self._seen:
                self._held_back += 1
                return False
            self._seen.add(kind)
        record.exc_info, record.exc_text = None, None
        return True

    def outage_over(self) -> int:
        """Start counting afresh; returns how many lines were held back in the outage."""
        with self._lock:
            held_back, self._held_back = self._held_back, 0
            self._seen.clear()
            return held_back

    def install(self, prefix: str = "taskmon") -> None:
        """Filter every logger of the package that exists now (all are made at import)."""
        names = [name for name in logging.Logger.manager.loggerDict if name.startswith(prefix)]
        for name in {prefix, *names}:
            logging.getLogger(name).addFilter(self)

    def uninstall(self, prefix: str = "taskmon") -> None:
        for name in list(logging.Logger.manager.loggerDict):
            if name.startswith(prefix):
                logging.getLogger(name).removeFilter(self)
