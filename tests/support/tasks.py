"""Tasks for the monitor tests: made fresh, and driven through legal steps via a monitor."""

from __future__ import annotations

from taskmon.domain import Task, TaskError, TaskRequest, TaskState
from taskmon.ports import TaskMonitor

QUEUED, RUNNING, DONE, FAILED = (
    TaskState.QUEUED,
    TaskState.RUNNING,
    TaskState.DONE,
    TaskState.FAILED,
)
BOOM = TaskError("engine_error", "boom")


def make_task(text: str = "hello", key: str | None = None, voice: str | None = None) -> Task:
    return Task.create(TaskRequest(text, voice), worker="w:1", now=10.0, idempotency_key=key)


def run_to(monitor: TaskMonitor, task: Task, final: TaskState) -> Task:
    """Drive a stored queued task to `final` through the monitor."""
    current = task
    steps = {QUEUED: [], RUNNING: [RUNNING], DONE: [RUNNING, DONE], FAILED: [RUNNING, FAILED]}
    for state in steps[final]:
        moved = monitor.transition(
            task.task_id,
            expected_version=current.version,
            state=state,
            now=20.0,
            error=BOOM if state is FAILED else None,
        )
        assert moved is not None
        current = moved
    return current
