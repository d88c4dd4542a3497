"""GET /api/task/stream/<id>: a task's states as Server-Sent Events.

Subscribe first, then read the snapshot: an event published between the two is then both in
the snapshot and in the queue, and the version filter drops the copy. Nothing can fall in a gap.
While waiting, the stream re-reads the snapshot at every keepalive, so even an event the hub
lost (pub/sub forgets while a subscriber reconnects) only delays the terminal state.

When the worker degrades (Redis away) a stream of its own task goes on from its memory's
events; a stream of a task it does not know (open already, or opened now) ends with one
`event: degraded` message and a `retry:` hint, as a 200 text/event-stream: an EventSource
treats any other answer as final, so this keeps it reconnecting, with Last-Event-ID, until a
worker can answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from flask import Blueprint, Response, request

from taskmon.domain import Task, check_task_id
from taskmon.ports import BackendUnavailable, Subscription, TaskMonitor, TaskUnknownWhileDegraded
from taskmon.web.context import runtime
from taskmon.web.problems import problem
from taskmon.web.status import status_json

bp = Blueprint("sse", __name__, url_prefix="/api")


def format_event(task: Task) -> str:
    data = json.dumps(status_json(task), ensure_ascii=False, separators=(",", ":"))
    return f"id: {task.version}\nevent: state\ndata: {data}\n\n"


def degraded_event(task_id: str) -> str:
    """The last message of a stream this worker cannot keep going while Redis is away."""
    data = json.dumps(
        {
            "task_id": task_id,
            "degraded": True,
            "detail": "this worker runs degraded while Redis is away and does not know this "
            "task; reconnect (with Last-Event-ID) shortly",
        },
        separators=(",", ":"),
    )
    return f"retry: 1000\nevent: degraded\ndata: {data}\n\n"


# Above any version a task reaches; a longer number means "past everything" just the same.
MAX_LAST_EVENT_ID_DIGITS = 18
_PAST_EVERY_VERSION: int = 10**MAX_LAST_EVENT_ID_DIGITS


def _last_event_id() -> int:
    raw = request.headers.get("Last-Event-ID", "").strip()
    # isdigit() alone accepts characters such as "²" that int() refuses.
    if not (raw.isascii() and raw.isdigit()):
        return 0
    # int() refuses more than 4300 digits (a ValueError, once a 500): a header may hold 8 KiB.
    digits = raw.lstrip("0") or "0"
    if len(digits) > MAX_LAST_EVENT_ID_DIGITS:
        return _PAST_EVERY_VERSION
    return int(digits)


@bp.get("/task/stream/<task_id>")
def stream(task_id: str) -> Response:
    check_task_id(task_id)
    rt = runtime()
    subscription = rt.monitor.subscribe(task_id)
    try:
        snapshot = rt.monitor.get(task_id)
    except TaskUnknownWhileDegraded:
        # An EventSource fails for good on any answer but 200 text/event-stream: this one
        # keeps it reconnecting (after `retry:`) until a worker can answer.
        subscription.close()
        return Response(
            degraded_event(task_id),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-store", "Connection": "close"},
        )
    except BaseException:
        subscription.close()
        raise
    if snapshot is None:
        subscription.close()
        return problem(404, f"no task {task_id} (unknown, or expired)", slug="task-not-found")
    events = _events(
        rt.monitor, subscription, snapshot, _last_event_id(), rt.settings.sse_keepalive_s
    )
    response = Response(
        events,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
    # A HEAD request never starts the generator, so its `with` would never close this.
    response.call_on_close(subscription.close)
    return response


def _events(
    monitor: TaskMonitor,
    subscription: Subscription,
    snapshot: Task,
    last_seen: int,
    keepalive_s: float,
) -> Iterator[str]:
    with subscription:
        current = snapshot
        if current.version > last_seen:
            last_seen = current.version
            yield format_event(current)
        last_write = time.monotonic()
        while not current.state.terminal:
            wait = keepalive_s - (time.monotonic() - last_write)
            event = subscription.get(timeout=wait) if wait > 0 else None
            if event is None:
                if time.monotonic() - last_write >= keepalive_s:
                    yield ": keepalive\n\n"
                    last_write = time.monotonic()
                try:
                    fresh = monitor.get(current.task_id)
                except (TaskUnknownWhileDegraded, BackendUnavailable):
                    yield degraded_event(current.task_id)
                    return
                if fresh is None:
                    return  # expired while streamed: nothing more will ever come
                candidate = fresh
            else:
                candidate = event.task
            if candidate.version <= current.version:
                continue
            current = candidate
            # A client ahead of us (Last-Event-ID above every version) still gets the end.
            if current.version > last_seen:
                last_seen = current.version
                yield format_event(current)
                last_write = time.monotonic()
