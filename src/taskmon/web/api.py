"""The JSON API: submit, status, result, stats."""

from __future__ import annotations

import json
import time

from flask import Blueprint, Response, request, send_file

from taskmon.domain import RECENT_MAX, InvalidInput, TaskState, check_task_id
from taskmon.ports import AdmissionClosed
from taskmon.service import Draining, IdempotencyConflict, QueueFull, ServiceClosed
from taskmon.web.context import runtime
from taskmon.web.json_body import read_json_body
from taskmon.web.problems import problem
from taskmon.web.status import accepted_json, status_json, summary_json

bp = Blueprint("api", __name__, url_prefix="/api")

RECENT_DEFAULT = 50


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False),
        status=status,
        mimetype="application/json",
        headers=headers,
    )


@bp.post("/tts")
def submit() -> Response:
    payload, refused = read_json_body()
    if refused is not None:
        return refused
    try:
        submission = runtime().service.submit(payload, request.headers.get("Idempotency-Key"))
    except IdempotencyConflict as exc:
        return problem(422, str(exc), slug="idempotency-key-reused", task_id=exc.task.task_id)
    except QueueFull as exc:
        return problem(
            429,
            f"{exc}; retry after {exc.retry_after_s} s",
            slug="queue-full",
            headers={"Retry-After": str(exc.retry_after_s)},
        )
    except AdmissionClosed as exc:
        return problem(
            429,
            f"{exc}; retry after {exc.retry_after_s} s",
            slug="degraded-rejecting",
            headers={"Retry-After": str(exc.retry_after_s)},
            degraded=True,
        )
    except Draining as exc:
        return problem(
            503,
            f"{exc}; retry (another worker admits it)",
            slug="draining",
            headers={"Retry-After": str(exc.retry_after_s)},
            worker=runtime().worker_id,
        )
    except ServiceClosed:
        return problem(
            503,
            "this worker is shutting down; retry",
            slug="shutting-down",
            headers={"Retry-After": "1"},
        )
    task = submission.task
    if submission.replayed:
        return _json(accepted_json(task), 200, {"Idempotent-Replayed": "true"})
    return _json(accepted_json(task), 202, {"Location": accepted_json(task)["status_url"]})


@bp.get("/task/status/<task_id>")
def status(task_id: str) -> Response:
    check_task_id(task_id)
    task = runtime().monitor.get(task_id)
    if task is None:
        return problem(404, f"no task {task_id} (unknown, or expired)", slug="task-not-found")
    return _json(status_json(task), headers={"Cache-Control": "no-store"})


@bp.get("/task/result/<task_id>")
def result(task_id: str) -> Response:
    check_task_id(task_id)
    rt = runtime()
    task = rt.monitor.get(task_id)
    if task is None:
        return problem(404, f"no task {task_id} (unknown, or expired)", slug="task-not-found")
    if task.state is not TaskState.DONE:
        return problem(
            409,
            f"task {task_id} is {task.state.value}; its result exists once it is done",
            slug="result-not-ready",
            state=task.state.value,
        )
    path = rt.results.path_for(task_id)
    if not path.is_file():
        return problem(
            410,
            f"the result of task {task_id} is no longer stored on this host",
            slug="result-gone",
        )
    return send_file(path, mimetype="audio/wav", download_name=f"{task_id}.wav", max_age=0)


@bp.get("/monitor/stats")
def stats() -> Response:
    rt = runtime()
    counts = rt.monitor.counts()
    limit, in_use = rt.semaphore.limit(), rt.semaphore.in_use()
    # Read after the calls: one that found Redis away has switched the worker already.
    degraded = rt.degraded
    body = {
        "backend": rt.monitor.backend,
        "degraded": degraded,
        "counts": counts.to_dict(),
        "total": counts.total,
        "success_rate": counts.success_rate,
        # While degraded: this worker's share of the cap and its own permits.
        "concurrency": {"limit": limit, "in_use": in_use, "scope": _scope(rt.monitor.backend)},
        "worker": rt.worker_id,
    }
    if rt.failover is not None:
        body["fallback_policy"] = rt.failover.policy
    return _json(body, headers={"Cache-Control": "no-store"})


@bp.get("/monitor/permits")
def permits() -> Response:
    """Who holds the permits now: worker, task, fencing token, seconds left on the lease."""
    rt = runtime()
    holders = rt.semaphore.holders()
    limit = rt.semaphore.limit()
    body = {
        "limit": limit,
        "in_use": len(holders),
        # While degraded the global holders cannot be read: these are this worker's own.
        "degraded": rt.degraded,
        "scope": _scope(rt.monitor.backend),
        "holders": [
            {
                "worker": h.holder.worker,
                "task_id": h.holder.task_id,
                "fencing": h.fencing,
                "expires_in_s": round(h.expires_in_s, 3),
            }
            for h in holders
        ],
        "worker": rt.worker_id,
    }
    return _json(body, headers={"Cache-Control": "no-store"})


@bp.get("/monitor/recent")
def recent() -> Response:
    """The newest tasks (`?limit=`, default 50, at most 200) and the one queued longest, for
    the monitor page. Two Redis round trips whatever the limit; while degraded, the answering
    worker's own tasks (`scope: "worker"`)."""
    limit = _recent_limit(request.args.get("limit"))
    rt = runtime()
    listed = rt.monitor.recent(limit)
    now = time.time()
    oldest = listed.oldest_queued
    body = {
        "backend": rt.monitor.backend,
        "degraded": rt.degraded,  # after the read: one that found Redis away switched already
        "scope": _scope(rt.monitor.backend),
        "limit": limit,
        "tasks": [summary_json(summary, now) for summary in listed.tasks],
        "oldest_queued": None if oldest is None else summary_json(oldest, now),
        "worker": rt.worker_id,
    }
    return _json(body, headers={"Cache-Control": "no-store"})


def _recent_limit(raw: str | None) -> int:
    if raw is None:
        return RECENT_DEFAULT
    # isdigit() alone accepts characters such as "²" that int() refuses.
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= RECENT_MAX:
        raise InvalidInput("limit", f"must be an integer from 1 to {RECENT_MAX}")
    return int(raw)


def _scope(backend: str) -> str:
    """Whose permits the numbers count: every worker's (Redis) or this worker's (memory)."""
    return "global" if backend == "redis" else "worker"
