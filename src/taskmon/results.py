"""Where finished WAV files live: one file per task in a directory the workers of a host share.

The directory is bounded twice, by the sweep each worker runs (runtime.py): by age (a result
older than the task's retention has no task left to serve it) and by size (the oldest finished
results go first until the directory is under its byte bound). Only this store's own files
count and go: `<task_id>.wav` results and the `.<task_id>.wav.*.tmp` files of syntheses.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from taskmon.domain import check_task_id

log = logging.getLogger(__name__)

_RESULT_NAME = re.compile(r"[0-9a-f]{32}\.wav")
# engines._atomic_temp: mkstemp(prefix=".<id>.wav.", suffix=".tmp") beside the result.
_TEMP_NAME = re.compile(r"\.[0-9a-f]{32}\.wav\..+\.tmp")
# A result this young is never removed for size: its client has just been told it is done.
RESULT_GRACE_S = 60.0


@dataclass(frozen=True)
class StoredFile:
    path: Path
    size: int
    mtime: float
    finished: bool  # a result; False for the temp file of a synthesis


@dataclass(frozen=True)
class SweepReport:
    """What one sweep removed, by reason, and what it left (bytes of this store's files)."""

    aged_files: int = 0
    aged_bytes: int = 0
    sized_files: int = 0
    sized_bytes: int = 0
    left_bytes: int = 0
    still_over: bool = False  # over the bound, with nothing left that may go

    @property
    def removed_files(self) -> int:
        return self.aged_files + self.sized_files

    @property
    def removed_bytes(self) -> int:
        return self.aged_bytes + self.sized_bytes


def choose_for_size(
    files: list[StoredFile], max_bytes: int, now: float, grace_s: float
) -> list[StoredFile]:
    """The finished results to remove, oldest first, until `files` total at most `max_bytes`;
    never a temp file (a synthesis writing) nor a result younger than `grace_s`. Pure."""
    total = sum(f.size for f in files)
    chosen: list[StoredFile] = []
    removable = sorted(
        (f for f in files if f.finished and now - f.mtime >= grace_s),
        key=lambda f: (f.mtime, f.path.name),
    )
    for candidate in removable:
        if total <= max_bytes:
            break
        chosen.append(candidate)
        total -= candidate.size
    return chosen


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

    def files(self) -> list[StoredFile]:
        """This store's files now (others in the directory are left out). Raises OSError when
        the directory cannot be listed."""
        found = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                finished = bool(_RESULT_NAME.fullmatch(entry.name))
                if not finished and not _TEMP_NAME.fullmatch(entry.name):
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed meanwhile (another worker's sweep, a rename)
                found.append(StoredFile(Path(entry.path), info.st_size, info.st_mtime, finished))
        return found

    def sweep(
        self,
        *,
        max_age_s: float,
        max_bytes: int,
        temp_max_age_s: float,
        grace_s: float = RESULT_GRACE_S,
    ) -> SweepReport:
        """Remove results older than `max_age_s` (temp files older than the larger of it and
        `temp_max_age_s`, leftovers of a killed synthesis), then the oldest results until the
        rest totals at most `max_bytes`. Logs one INFO line when it removed anything, a WARNING
        when it stays over the bound. Never raises: a failure to list or remove is a WARNING.

        The workers of a host sweep the same directory: a file another one removed first is
        not counted as freed here, but it is gone, so it counts against the excess.
        """
        now = time.time()
        try:
            files = self.files()
        except OSError:
            log.warning("cannot list result directory %s", self.directory, exc_info=True)
            return SweepReport()
        kept: list[StoredFile] = []
        aged_files = aged_bytes = 0
        for f in files:
            limit = max_age_s if f.finished else max(max_age_s, temp_max_age_s)
            if now - f.mtime <= limit:
                kept.append(f)
                continue
            removed = self._remove(f)
            if removed is None:
                kept.append(f)
            elif removed:
                aged_files, aged_bytes = aged_files + 1, aged_bytes + f.size
        sized_files = sized_bytes = 0
        gone = set()
        for f in choose_for_size(kept, max_bytes, now, grace_s):
            removed = self._remove(f)
            if removed is not None:
                gone.add(f.path)
            if removed:
                sized_files, sized_bytes = sized_files + 1, sized_bytes + f.size
        left = sum(f.size for f in kept if f.path not in gone)
        report = SweepReport(
            aged_files, aged_bytes, sized_files, sized_bytes, left, left > max_bytes
        )
        self._log(report, max_age_s, max_bytes, grace_s)
        return report

    def _remove(self, f: StoredFile) -> bool | None:
        """True when this call removed it, False when it was gone already, None on failure."""
        try:
            f.path.unlink()
        except FileNotFoundError:
            return False  # another worker of this host removed it first
        except OSError:
            log.warning("cannot remove result file %s", f.path, exc_info=True)
            return None
        return True

    def _log(self, report: SweepReport, max_age_s: float, max_bytes: int, grace_s: float) -> None:
        if report.removed_files:
            why = []
            if report.aged_files:
                why.append(
                    f"{report.aged_files} ({report.aged_bytes} bytes) by age, older than "
                    f"TASKMON_TASK_TTL_S={max_age_s:g} s"
                )
            if report.sized_files:
                why.append(
                    f"{report.sized_files} ({report.sized_bytes} bytes) by size, oldest first, "
                    f"to keep under TASKMON_RESULT_MAX_BYTES={max_bytes}"
                )
            log.info(
                "result sweep of %s removed %d file(s), %d bytes: %s; %d bytes left",
                self.directory,
                report.removed_files,
                report.removed_bytes,
                "; ".join(why),
                report.left_bytes,
            )
        if report.still_over:
            log.warning(
                "result directory %s holds %d bytes, over TASKMON_RESULT_MAX_BYTES=%d, and what "
                "is left may not go yet (results younger than %g s, syntheses being written): "
                "raise TASKMON_RESULT_MAX_BYTES or give the directory more room",
                self.directory,
                report.left_bytes,
                max_bytes,
                grace_s,
            )
