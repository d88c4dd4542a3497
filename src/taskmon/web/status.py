"""The public JSON of a task, and its URLs: one place, so the API and SSE stream never differ."""

from __future__ import annotations

from typing import Any

from taskmon.domain import Task, TaskState, TaskSummary


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


def summary_json(summary: TaskSummary, now: float) -> dict[str, Any]:
    """A task as GET /api/monitor/recent lists it. `queued_s` is how long it waited for a
    permit (until now while queued), `run_s` how long its synthesis ran (until now while
    running; null before it started): both from the stored times and this host's clock."""
    started, finished = summary.started_at, summary.finished_at
    left_queue = started if started is not None else finished if finished is not None else now
    return {
        "task_id": summary.task_id,
        "state": summary.state.value,
        "version": summary.version,
        "worker": summary.worker,
        "created_at": summary.created_at,
        "started_at": started,
        "finished_at": finished,
        "queued_s": round(max(0.0, left_queue - summary.created_at), 3),
        "run_s": None if started is None else round(max(0.0, (finished or now) - started), 3),
        "error": summary.error.to_dict() if summary.error else None,
        "text_excerpt": summary.excerpt,
        "status_url": status_url(summary.task_id),
        "result_url": result_url(summary.task_id) if summary.state is TaskState.DONE else None,
    }
