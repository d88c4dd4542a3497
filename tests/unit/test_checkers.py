"""The harness's checkers must flag the runs that break their invariant (pure logic)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskmon.harness.journal_check import check_cap, main
from taskmon.harness.monotonic import monotonic_violations, stream_violations
from taskmon.journal import SynthesisJournal


def _write(journal: Path, name: str, lines: list[tuple[int, str, str]]) -> None:
    journal.mkdir(exist_ok=True)
    with (journal / f"journal-{name}.jsonl").open("w") as out:
        for stamp, event, task in lines:
            out.write(json.dumps({"t": stamp, "event": event, "pid": 1, "task": task}) + "\n")


def test_cap_checker_finds_the_peak_across_files(tmp_path: Path) -> None:
    _write(tmp_path, "a", [(0, "start", "a1"), (10, "end", "a1")])
    _write(tmp_path, "a2", [(20, "start", "a2"), (40, "end", "a2")])
    _write(tmp_path, "b", [(5, "start", "b1"), (25, "end", "b1")])
    _write(tmp_path, "b2", [(30, "start", "b2"), (35, "end", "b2")])
    report = check_cap(tmp_path)
    assert (report.peak, report.syntheses, report.files) == (2, 4, 4)
    assert not report.violates(2)
    assert report.violates(1)
    assert main([str(tmp_path), "--limit", "1"]) == 1
    assert main([str(tmp_path), "--limit", "2"]) == 0


def test_a_handoff_at_one_instant_is_not_an_overlap(tmp_path: Path) -> None:
    _write(tmp_path, "a", [(0, "start", "a1"), (10, "end", "a1")])
    _write(tmp_path, "b", [(10, "start", "b1"), (20, "end", "b1")])
    assert check_cap(tmp_path).peak == 1


def test_an_unmatched_start_counts_as_running_to_the_end(tmp_path: Path) -> None:
    _write(tmp_path, "a", [(0, "start", "dead")])
    _write(tmp_path, "b", [(50, "start", "b1"), (60, "end", "b1")])
    report = check_cap(tmp_path)
    assert report.peak == 2
    assert report.unmatched_starts == ["dead"]


def test_a_corrupt_line_is_an_error_naming_the_file(tmp_path: Path) -> None:
    tmp_path.joinpath("journal-x.jsonl").write_text('{"t": 1, "event": "begin"}\n')
    with pytest.raises(ValueError, match=r"journal-x\.jsonl:1"):
        check_cap(tmp_path)


def test_the_journal_writes_what_the_checker_reads(tmp_path: Path) -> None:
    journal = SynthesisJournal(tmp_path)
    journal.record("start", "t1", 1)
    journal.record("start", "t2", 2)
    journal.record("end", "t1", 1)
    journal.record("end", "t2", 2)
    journal.close()
    report = check_cap(tmp_path)
    assert (report.peak, report.syntheses, report.unmatched_starts) == (2, 2, [])


def test_a_disabled_journal_writes_nothing(tmp_path: Path) -> None:
    journal = SynthesisJournal(None)
    journal.record("start", "t1", 1)
    assert not journal.enabled
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("observations", "problem"),
    [
        ([(1, "queued"), (3, "done"), (2, "running")], "version went back"),
        ([(2, "running"), (2, "queued")], "named two states"),
        ([(3, "done"), (4, "running")], "state went back"),
        ([(3, "failed"), (4, "done")], "terminal failed changed"),
    ],
)
def test_monotonic_checker_flags_going_back(
    observations: list[tuple[int, str]], problem: str
) -> None:
    assert any(problem in p for p in monotonic_violations(observations))


def test_monotonic_checker_accepts_polling_repeats() -> None:
    assert monotonic_violations([(1, "queued"), (1, "queued"), (2, "running"), (3, "done")]) == []


def test_stream_checker_wants_strict_growth_and_a_terminal_end() -> None:
    assert stream_violations([(1, "queued"), (2, "running"), (3, "done")]) == []
    assert any("strictly" in p for p in stream_violations([(1, "queued"), (1, "queued")]))
    assert any("terminal" in p for p in stream_violations([(1, "queued"), (2, "running")]))
