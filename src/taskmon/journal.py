"""The synthesis journal: the independent witness for the global cap (invariant I1).

With TASKMON_JOURNAL_DIR set, each worker appends one line when a synthesis starts and one when
it ends, to its own file, stamped with CLOCK_MONOTONIC (one clock for every process of a host),
and one `abandoned` line when its shutdown fails a task it never finished: in memory mode that
failure is stored in the worker alone, and the line is what tells of it once the worker is gone.
The checker (taskmon.harness.journal_check) rebuilds how many syntheses ran at each instant from
these lines alone, without trusting the semaphore's own bookkeeping.

A line is written and flushed before the engine starts and after it returns, so the journal can
only overstate concurrency (never understate it). A journal that cannot be written logs an error
and stops journaling; it never fails a task.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


class SynthesisJournal:
    def __init__(self, directory: Path | None) -> None:
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._pid = os.getpid()
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"journal-{socket.gethostname()}-{self._pid}.jsonl"
            self._file = path.open("a", encoding="utf-8", buffering=1)

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def record(self, event: str, task_id: str, fencing: int) -> None:
        """Append `start` or `end` for one synthesis, or `abandoned` (fencing 0) for a task the
        shutdown failed. Thread-safe; never raises."""
        if self._file is None:
            return
        line = json.dumps(
            {
                "t": time.clock_gettime_ns(time.CLOCK_MONOTONIC),
                "event": event,
                "pid": self._pid,
                "task": task_id,
                "fencing": fencing,
            },
            separators=(",", ":"),
        )
        with self._lock:
            try:
                self._file.write(line + "\n")
                self._file.flush()
            except OSError:
                log.exception("cannot write the synthesis journal; journaling stops")
                self._file = None

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
