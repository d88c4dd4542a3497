"""Where finished WAV files live: one file per task in a directory the workers of a host share."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from taskmon.domain import check_task_id

log = logging.getLogger(__name__)


class ResultStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def prepare(self) -> None:
        """Create the directory. Raises OSError with the path when it cannot be made."""
        self.directory.mkdir(parents=True, exist_ok=True)

    def path_for(self, task_id: str) -> Path:
        # The id is checked here as well as at the edge: it becomes a file name.
        return self.directory / f"{check_task_id(task_id)}.wav"

    def writable(self) -> bool:
        return self.directory.is_dir() and os.access(self.directory, os.W_OK | os.X_OK)

    def purge_older_than(self, age_s: float) -> int:
        """Delete results (and stray temp files) older than `age_s`; returns how many went."""
        cutoff = time.time() - age_s
        removed = 0
        try:
            entries = list(self.directory.iterdir())
        except OSError:
            log.warning("cannot list result directory %s", self.directory, exc_info=True)
            return 0
        for entry in entries:
            try:
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # another worker of this host removed it first
            except OSError:
                log.warning("cannot remove old result %s", entry, exc_info=True)
        return removed
