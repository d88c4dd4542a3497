"""What the Locust users saw, as JSON lines: the runner's evidence (see evidence.py).

One file per Locust process, `records-<pid>.jsonl` in TASKMON_LOADTEST_RECORD_DIR. Every line
is one observation with a kind `k`; times are CLOCK_MONOTONIC seconds, the clock the synthesis
journals use, so the runner can lay both on one time axis (same machine only).

Kinds: `req` (every HTTP call: name, start, ms, status, outcome), `accepted` (a 202/200 of a
submission: task, worker, idempotency key), `unsure` (a submission whose answer never came:
it may have happened), `read` (a status read: observer, task, worker, status, version, state),
`stream` (an SSE stream: worker, status, every event with its arrival time, how it ended),
`idem` (an idempotency storm answer), `lag` and `cpu` (the generator's own health).

Nothing here raises into a user: a full disk loses records (the runner then finds too few
and says unknown), never a request.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("loadtests.recording")

RECORD_DIR_ENV = "TASKMON_LOADTEST_RECORD_DIR"


class Recorder:
    """Appends observations to this process's records file; a no-op without a directory."""

    def __init__(self, directory: str | None) -> None:
        self._file: IO[str] | None = None
        if directory:
            path = Path(directory) / f"records-{os.getpid()}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")

    def write(self, kind: str, **fields: Any) -> None:
        if self._file is None:
            return
        try:
            self._file.write(json.dumps({"k": kind, **fields}, separators=(",", ":")) + "\n")
        except (OSError, ValueError) as exc:  # ValueError: written after close
            log.warning("a record was lost (%s): the verdict may come out unknown", exc)

    def flush(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
            except OSError as exc:
                log.warning("records could not be flushed: %s", exc)

    def close(self) -> None:
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None


def now() -> float:
    return time.monotonic()


RECORDER = Recorder(os.environ.get(RECORD_DIR_ENV))
