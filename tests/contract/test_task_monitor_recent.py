"""The TaskMonitor port's `recent` read (the monitor page's list), on both adapters.

Beside tests/contract/test_task_monitor.py, which holds the rest of the port's contract: the
newest tasks first, each as it is now, an excerpt of its text (markup kept verbatim: the page
shows it as text), the index bounded to RECENT_MAX, the task queued longest, and the limit's
rule.
"""

from __future__ import annotations

import dataclasses

import pytest

from taskmon.domain import EXCERPT_CHARS, RECENT_MAX, Task, TaskState, TaskSummary
from taskmon.ports import TaskMonitor
from tests.support.tasks import BOOM, DONE, FAILED, RUNNING, make_task, run_to


def task_at(created_at: float, text: str = "hello") -> Task:
    return dataclasses.replace(make_task(text), created_at=created_at)


def listed(monitor: TaskMonitor, limit: int = RECENT_MAX) -> list[tuple[str, TaskState]]:
    return [(s.task_id, s.state) for s in monitor.recent(limit).tasks]


def test_nothing_listed_in_an_empty_store(monitor: TaskMonitor) -> None:
    recent = monitor.recent(50)
    assert (recent.tasks, recent.oldest_queued) == ([], None)


def test_newest_first_each_as_it_is_now(monitor: TaskMonitor) -> None:
    tasks = [task_at(100.0 + n, f"task {n}") for n in range(5)]
    for task in tasks:
        monitor.start(task)
    done = run_to(monitor, tasks[1], DONE)
    failed = run_to(monitor, tasks[2], FAILED)
    running = run_to(monitor, tasks[3], RUNNING)
    assert listed(monitor) == [
        (tasks[4].task_id, TaskState.QUEUED),
        (running.task_id, TaskState.RUNNING),
        (failed.task_id, TaskState.FAILED),
        (done.task_id, TaskState.DONE),
        (tasks[0].task_id, TaskState.QUEUED),
    ]
    assert listed(monitor, 2) == listed(monitor)[:2]
    by_id = {s.task_id: s for s in monitor.recent(10).tasks}
    assert by_id[done.task_id] == TaskSummary.of(done)
    assert by_id[failed.task_id].error == BOOM
    assert by_id[running.task_id] == TaskSummary.of(running)


def test_the_excerpt_is_the_texts_start_with_markup_verbatim(monitor: TaskMonitor) -> None:
    markup = "<img src=x onerror=alert(1)>"
    short, long = task_at(1.0, f"  {markup}\n\tsays   hi "), task_at(2.0, "word " * 400)
    monitor.start(short)
    monitor.start(long)
    excerpts = {s.task_id: s.excerpt for s in monitor.recent(5).tasks}
    assert excerpts[short.task_id] == f"{markup} says hi"
    assert len(excerpts[long.task_id]) == EXCERPT_CHARS
    assert excerpts[long.task_id].endswith("\u2026")
    assert long.text.startswith(excerpts[long.task_id][:-1])


def test_the_index_keeps_only_the_newest(monitor: TaskMonitor) -> None:
    extra = 5
    tasks = [task_at(1000.0 + n) for n in range(RECENT_MAX + extra)]
    for task in tasks:
        monitor.start(task)
    newest = [task.task_id for task in reversed(tasks[extra:])]
    assert [s.task_id for s in monitor.recent(RECENT_MAX).tasks] == newest
    # An older task written back now is indexed by its creation time: past the bound, so
    # not listed (and not pushing out a newer one).
    monitor.restore(task_at(1.0))
    assert [s.task_id for s in monitor.recent(RECENT_MAX).tasks] == newest


def test_a_restored_task_is_listed(monitor: TaskMonitor) -> None:
    task = task_at(50.0)
    running = task.transition(RUNNING, now=51.0)
    assert monitor.restore(running).written
    assert listed(monitor) == [(task.task_id, TaskState.RUNNING)]


def test_the_oldest_queued_is_the_one_waiting_longest(monitor: TaskMonitor) -> None:
    first, second, third = task_at(30.0), task_at(10.0), task_at(20.0)
    for task in (first, second, third):
        monitor.start(task)
    oldest = monitor.recent(1).oldest_queued
    assert oldest == TaskSummary.of(second), "by creation time, whatever the limit"
    run_to(monitor, second, RUNNING)
    assert monitor.recent(1).oldest_queued == TaskSummary.of(third)
    run_to(monitor, third, FAILED)
    run_to(monitor, first, DONE)
    assert monitor.recent(1).oldest_queued is None


@pytest.mark.parametrize("limit", [0, -1, RECENT_MAX + 1, True, 2.0, "5"])
def test_a_limit_outside_the_rule_is_refused(monitor: TaskMonitor, limit: object) -> None:
    with pytest.raises(ValueError, match="limit"):
        monitor.recent(limit)  # type: ignore[arg-type]
