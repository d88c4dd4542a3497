"""The result directory's two bounds, age and size, on a real directory: what a sweep removes,
what it never touches, what it logs, and that a worker's runtime sweeps at start."""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

import pytest

from taskmon.config import load_settings
from taskmon.results import RESULT_GRACE_S, ResultStore, StoredFile, choose_for_size
from taskmon.runtime import build_runtime
from tests.support.timing import wait_for

pytestmark = pytest.mark.usefixtures("clean_taskmon_env")

HOUR = 3600.0
DAY = 86_400.0


def put(directory: Path, name: str, size: int, age_s: float) -> Path:
    path = directory / name
    path.write_bytes(b"\0" * size)
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def result(directory: Path, size: int, age_s: float) -> Path:
    return put(directory, f"{uuid.uuid4().hex}.wav", size, age_s)


def temp(directory: Path, size: int, age_s: float) -> Path:
    return put(directory, f".{uuid.uuid4().hex}.wav.ab12cd_x.tmp", size, age_s)


def sweep(store: ResultStore, max_bytes: int, max_age_s: float = DAY) -> object:
    return store.sweep(max_age_s=max_age_s, max_bytes=max_bytes, temp_max_age_s=240)


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    made = ResultStore(tmp_path / "results")
    made.prepare()
    return made


def test_size_removes_the_oldest_results_until_under(store: ResultStore) -> None:
    d = store.directory
    oldest, older, old = result(d, 400, 5 * HOUR), result(d, 300, 4 * HOUR), result(d, 200, HOUR)
    newer = result(d, 500, 0.5 * HOUR)
    report = sweep(store, max_bytes=600)  # 1400 bytes: the three oldest go (900), 500 left
    assert [p.exists() for p in (oldest, older, old, newer)] == [False, False, False, True]
    assert report.sized_files == 3  # type: ignore[attr-defined]
    assert report.sized_bytes == 900  # type: ignore[attr-defined]
    assert report.left_bytes == 500  # type: ignore[attr-defined]
    assert not report.still_over  # type: ignore[attr-defined]
    assert sweep(store, max_bytes=600).removed_files == 0  # type: ignore[attr-defined]


def test_size_never_removes_a_synthesis_being_written_nor_a_young_result(
    store: ResultStore,
) -> None:
    d = store.directory
    writing = temp(d, 1000, 10)  # counts against the bound, but is never chosen
    young = result(d, 1000, RESULT_GRACE_S / 2)
    old = result(d, 100, HOUR)
    report = sweep(store, max_bytes=500)
    assert writing.exists()
    assert young.exists()
    assert not old.exists()
    assert report.still_over  # type: ignore[attr-defined]
    assert report.left_bytes == 2000  # type: ignore[attr-defined]


def test_age_removes_old_results_and_leftover_temp_files(store: ResultStore) -> None:
    d = store.directory
    expired, fresh = result(d, 10, 2 * DAY), result(d, 10, HOUR)
    leftover, writing = temp(d, 10, 2 * DAY), temp(d, 10, 60)
    report = sweep(store, max_bytes=10**9)
    assert [p.exists() for p in (expired, fresh, leftover, writing)] == [False, True, False, True]
    assert (report.aged_files, report.sized_files) == (2, 0)  # type: ignore[attr-defined]


def test_a_temp_file_outlives_a_short_retention_while_a_synthesis_may_write_it(
    store: ResultStore,
) -> None:
    writing = temp(store.directory, 10, 120)  # older than the 60 s retention, under 240 s
    sweep(store, max_bytes=10**9, max_age_s=60)
    assert writing.exists()


def test_files_that_are_not_results_are_neither_counted_nor_removed(store: ResultStore) -> None:
    d = store.directory
    foreign = put(d, "notes.txt", 10_000, 3 * DAY)
    (d / "sub").mkdir()
    ours = result(d, 100, HOUR)
    report = sweep(store, max_bytes=150)
    assert foreign.exists()
    assert (d / "sub").is_dir()
    assert ours.exists()
    assert report.removed_files == 0  # type: ignore[attr-defined]


def test_the_size_choice_is_oldest_first_and_just_enough(tmp_path: Path) -> None:
    now = time.time()
    files = [
        StoredFile(tmp_path / "c", 100, now - HOUR, finished=True),
        StoredFile(tmp_path / "a", 100, now - 3 * HOUR, finished=True),
        StoredFile(tmp_path / "t", 100, now - 4 * HOUR, finished=False),  # being written
        StoredFile(tmp_path / "b", 100, now - 2 * HOUR, finished=True),
    ]
    chosen = choose_for_size(files, 250, now, RESULT_GRACE_S)
    assert [f.path.name for f in chosen] == ["a", "b"]
    assert choose_for_size(files, 400, now, RESULT_GRACE_S) == []
    assert [f.path.name for f in choose_for_size(files, 0, now, 2.5 * HOUR)] == ["a"]


def test_a_sweep_that_removed_something_logs_one_info_line(
    store: ResultStore, caplog: pytest.LogCaptureFixture
) -> None:
    d = store.directory
    result(d, 100, 2 * DAY)
    result(d, 300, 2 * HOUR)
    result(d, 50, HOUR)
    with caplog.at_level(logging.INFO, logger="taskmon.results"):
        sweep(store, max_bytes=100)
        sweep(store, max_bytes=100)  # nothing left to do: no line
    lines = [r for r in caplog.records if r.name == "taskmon.results"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    line = lines[0]
    assert line.levelno == logging.INFO
    text = line.getMessage()
    assert "removed 2 file(s), 400 bytes" in text
    assert "1 (100 bytes) by age, older than TASKMON_TASK_TTL_S=86400 s" in text
    assert "1 (300 bytes) by size, oldest first, to keep under TASKMON_RESULT_MAX_BYTES=100" in text
    assert "50 bytes left" in text


def test_a_sweep_stuck_over_the_bound_warns(
    store: ResultStore, caplog: pytest.LogCaptureFixture
) -> None:
    result(store.directory, 1000, 1)
    with caplog.at_level(logging.INFO, logger="taskmon.results"):
        sweep(store, max_bytes=10)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "over TASKMON_RESULT_MAX_BYTES=10" in warnings[0].getMessage()


def test_the_worker_sweeps_by_size_as_it_starts(tmp_path: Path) -> None:
    directory = tmp_path / "results"
    directory.mkdir()
    old = [result(directory, 1000, HOUR + n) for n in range(5)]
    newest = result(directory, 1000, HOUR - 60)
    settings = load_settings(
        {
            "backend": "memory",
            "engine": "tone",
            "result_dir": directory,
            "result_max_bytes": 2500,
        }
    )
    rt = build_runtime(settings)
    try:
        rt.start()
        wait_for(lambda: sum(p.exists() for p in old) == 1, message="the size sweep at start")
    finally:
        rt.close(wait=True)
    assert newest.exists()
    assert old[0].exists(), "the youngest of the old ones is kept (2000 bytes <= 2500)"
