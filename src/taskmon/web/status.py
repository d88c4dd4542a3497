"""The public JSON of a task, and its URLs: one place, so the API and SSE stream never differ."""

from __future__ import annotations

from typing import Any

from taskmon.domain import Task, TaskState


def status_url(task_id: str) -> str:
    return f"/api/task/status/{task_id}"


def stream_url(task_id: str) -> str:
    return f"/api/task/stream/{task_id}"


def result_url(task_id: str) -> str:
    return f"/api/task/result/{task_id}"


def status_json(task: Task) -> dict[str, Any]:
    body = task.status()
    body["result_url"] = result_url(task.task_id) if task.state is TaskState.DONE else None
    return body


def accepted_json(task: Task) -> dict[str, Any]:
    """The body of 202, and byte for byte of its idempotent replays (the IETF draft replays the
    original response): `state` is the state at acceptance, always queued; status_url tells now.
    """
    return {
        "task_id": task.task_id,
        "state": TaskState.QUEUED.value,
        "status_url": status_url(task.task_id),
        "stream_url": stream_url(task.task_id),
        "result_url": result_url(task.task_id),
    }
