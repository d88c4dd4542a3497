"""GET /api/task/stream/<id>: a task's states as Server-Sent Events, as an EventSource reads them.

Subscribe first, then read the snapshot: an event published between the two is then both in
the snapshot and in the queue, and the version filter drops the copy. Nothing can fall in a gap.
While waiting, the stream re-reads the snapshot at every keepalive, so even an event the hub
lost (pub/sub forgets while a subscriber reconnects) only delays the terminal state.

An EventSource reconnects, with Last-Event-ID, whenever a 200 stream ends, and stops for good
on any other answer. So:
- every stream starts with `retry:` (1 to 2 s, jittered so the streams of a restarted worker
  do not all come back in the same instant): the reconnect after a stream cut mid-task;
- a request whose Last-Event-ID is at or past the version of a terminal task answers 204 No
  Content, the HTML standard's way to stop an EventSource: the reconnect that follows the
  terminal event is the last one;
- a stream that sent no state event for TASKMON_SSE_IDLE_TIMEOUT_S ends (keepalives do not
  count), with its `retry:` repeated: the EventSource resumes it, from any worker;
- past TASKMON_SSE_MAX_STREAMS open streams in this worker, 503 with Retry-After (stream_slots).

When the worker degrades (Redis away) a stream of its own task goes on from its memory's
events; a stream of a task it does not know (open already, or opened now) ends with one
`event: degraded` message and a `retry:` hint, as a 200 text/event-stream, which keeps an
EventSource reconnecting, with Last-Event-ID, until a worker can answer.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

from flask import Blueprint, Response, request

from taskmon.domain import Task, check_task_id
from taskmon.ports import BackendUnavailable, Subscription, TaskMonitor, TaskUnknownWhileDegraded
from taskmon.web.context import runtime
from taskmon.web.problems import problem
from taskmon.web.status import status_json
from taskmon.web.stream_slots import Slot, stream_slots

bp = Blueprint("sse", __name__, url_prefix="/api")

# The reconnection delay every stream announces: RECONNECT_MS plus up to RECONNECT_JITTER_MS.
RECONNECT_MS = 1000
RECONNECT_JITTER_MS = 1000
# Retry-After of the 503 for a worker at its stream limit: a slot frees when a stream of this
# worker ends (its task's end, a client leaving, an idle timeout), rarely within a second.
BUSY_RETRY_AFTER_S = 5
_STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def format_event(task: Task) -> str:
    data = json.dumps(status_json(task), ensure_ascii=False, separators=(",", ":"))
    return f"id: {task.version}\nevent: state\ndata: {data}\n\n"


def retry_field(retry_ms: int) -> str:
    """A block with only `retry:`: it sets the reconnection delay and dispatches no event."""
    return f"retry: {retry_ms}\n\n"


def idle_end(retry_ms: int, idle_s: float) -> str:
    return f"retry: {retry_ms}\n: no state event for {idle_s:g} s; reconnect with Last-Event-ID\n\n"


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


def _reconnect_ms() -> int:
    return RECONNECT_MS + random.randrange(RECONNECT_JITTER_MS)  # noqa: S311 - spread, not secret


@bp.get("/task/stream/<task_id>")
def stream(task_id: str) -> Response:
    check_task_id(task_id)
    slot = stream_slots().try_take()
    if slot is None:
        return problem(
            503,
            f"this worker serves {stream_slots().limit} streams already; retry after "
            f"{BUSY_RETRY_AFTER_S} s, or poll the status meanwhile",
            slug="too-many-streams",
            # A new connection may reach another worker, with free slots.
            headers={"Retry-After": str(BUSY_RETRY_AFTER_S), "Connection": "close"},
        )
    try:
        response = _open(task_id, slot)
    except BaseException:
        slot.release()
        raise
    return response


def _open(task_id: str, slot: Slot) -> Response:
    """The answer to a stream request holding `slot`: the slot goes back when the streamed
    response closes (its end, the client leaving, an error, a HEAD), or here at once for an
    answer that streams nothing."""
    rt = runtime()
    subscription = rt.monitor.subscribe(task_id)
    try:
        snapshot = rt.monitor.get(task_id)
    except TaskUnknownWhileDegraded:
        subscription.close()
        slot.release()
        return Response(
            degraded_event(task_id),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-store", "Connection": "close"},
        )
    except BaseException:
        subscription.close()
        raise
    last_seen = _last_event_id()
    if snapshot is None or (snapshot.state.terminal and last_seen >= snapshot.version):
        subscription.close()
        slot.release()
        if snapshot is None:
            return problem(404, f"no task {task_id} (unknown, or expired)", slug="task-not-found")
        # The client saw the end: 204 stops its EventSource instead of a reconnect every
        # few seconds for as long as the page stays open.
        return Response(status=204, headers={"Cache-Control": "no-store"})
    pacing = Pacing(
        keepalive_s=rt.settings.sse_keepalive_s,
        idle_timeout_s=rt.settings.sse_idle_timeout_s,
        retry_ms=_reconnect_ms(),
    )
    response = Response(
        _events(rt.monitor, subscription, snapshot, last_seen, pacing),
        mimetype="text/event-stream",
        headers=_STREAM_HEADERS,
    )
    # A HEAD request never starts the generator, so its `with` would never close this.
    response.call_on_close(subscription.close)
    response.call_on_close(slot.release)
    return response


@dataclass(frozen=True)
class Pacing:
    """When a stream speaks without news: a keepalive comment every `keepalive_s` of silence
    (for proxies), the end after `idle_timeout_s` without a state event (keepalives do not
    count), and the reconnection delay it announces."""

    keepalive_s: float
    idle_timeout_s: float
    retry_ms: int


def _events(
    monitor: TaskMonitor,
    subscription: Subscription,
    snapshot: Task,
    last_seen: int,
    pacing: Pacing,
) -> Iterator[str]:
    with subscription:
        yield retry_field(pacing.retry_ms)
        current = snapshot
        if current.version > last_seen:
            last_seen = current.version
            yield format_event(current)
        last_write = last_event = time.monotonic()
        while not current.state.terminal:
            now = time.monotonic()
            until_keepalive = pacing.keepalive_s - (now - last_write)
            until_idle = pacing.idle_timeout_s - (now - last_event)
            wait = min(until_keepalive, until_idle)
            event = subscription.get(timeout=wait) if wait > 0 else None
            if event is None:
                now = time.monotonic()
                idle = now - last_event >= pacing.idle_timeout_s
                if not idle and now - last_write >= pacing.keepalive_s:
                    yield ": keepalive\n\n"
                    last_write = now
                # Before a keepalive and before an idle end: an event the hub lost is here.
                try:
                    fresh = monitor.get(current.task_id)
                except (TaskUnknownWhileDegraded, BackendUnavailable):
                    yield degraded_event(current.task_id)
                    return
                if fresh is None:
                    return  # expired while streamed: nothing more will ever come
                if idle and fresh.version <= max(current.version, last_seen):
                    yield idle_end(pacing.retry_ms, pacing.idle_timeout_s)
                    return
                candidate = fresh
            else:
                candidate = event.task
            if candidate.version <= current.version:
                continue
            current = candidate
            # A client ahead of us (Last-Event-ID above every version) still gets the end:
            # after it, a reconnect gets 204 and would never learn how the task ended.
            if current.version > last_seen or current.state.terminal:
                last_seen = current.version
                yield format_event(current)
                last_write = last_event = time.monotonic()
