"""How a Task is stored in a Redis hash and carried in a pub/sub event. Pure: no I/O.

The hash holds one flat field per Task attribute, every value a string:

    task_id, text, voice, fingerprint, state, version, created_at, worker,
    started_at, finished_at, error_code, error_message, idempotency_key, boot

`boot` (the holding worker process's boot id) is optional when reading: records and events an
older version wrote lack it, and read as an empty boot. `None` is stored as the empty string, so
every field is always present and a transition only ever sets fields (HSET), never deletes them.
What this cannot tell apart from None (an empty voice or idempotency key, a TaskError whose code
and message are both empty) is never produced: TaskRequest.parse and check_idempotency_key
reject the first two, the service names every error.
Timestamps are `repr(float)`, which round-trips exactly; the version is a decimal integer, which
the scripts compare as a string. Fields that are not the Task's (the monitor's `op` token, the
`excerpt` of the text the recent list reads) are ignored when reading a Task.

An event is the JSON object of the same fields, including `text`. A TaskEvent promises the task
as it is right after the change, and Task equality includes the text, so an event without it
would rebuild a different Task (or need a second Redis read per event in the subscriber's one
reader thread, which would stall every other stream while Redis is slow). The cost is bounded:
at most 5000 characters (about 15 kB as UTF-8), three events per task, sent only to the worker
processes with a stream on that task.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from taskmon.domain import Task, TaskError, TaskEvent, TaskState, TaskSummary

TASK_FIELDS = (
    "task_id",
    "text",
    "voice",
    "fingerprint",
    "state",
    "version",
    "created_at",
    "worker",
    "started_at",
    "finished_at",
    "error_code",
    "error_message",
    "idempotency_key",
)
# Read when present: an older version wrote none.
OPTIONAL_FIELDS = ("boot",)


def _opt_str(value: str | None) -> str:
    return "" if value is None else value


def _opt_float(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def task_to_fields(task: Task) -> dict[str, str]:
    """The hash fields of `task`, in TASK_FIELDS order, then OPTIONAL_FIELDS."""
    return {
        "task_id": task.task_id,
        "text": task.text,
        "voice": _opt_str(task.voice),
        "fingerprint": task.fingerprint,
        "state": task.state.value,
        "version": str(task.version),
        "created_at": _opt_float(task.created_at),
        "worker": task.worker,
        "started_at": _opt_float(task.started_at),
        "finished_at": _opt_float(task.finished_at),
        "error_code": task.error.code if task.error else "",
        "error_message": task.error.message if task.error else "",
        "idempotency_key": _opt_str(task.idempotency_key),
        "boot": task.boot,
    }


def task_from_fields(fields: Mapping[str, str]) -> Task:
    """Rebuild a Task from its hash fields. Raises ValueError naming a missing or bad field."""
    missing = [name for name in TASK_FIELDS if name not in fields]
    if missing:
        raise ValueError(f"task hash lacks field(s) {', '.join(missing)}")
    try:
        code, message = fields["error_code"], fields["error_message"]
        return Task(
            task_id=fields["task_id"],
            text=fields["text"],
            voice=fields["voice"] or None,
            fingerprint=fields["fingerprint"],
            state=TaskState(fields["state"]),
            version=int(fields["version"]),
            created_at=float(fields["created_at"]),
            worker=fields["worker"],
            started_at=float(fields["started_at"]) if fields["started_at"] else None,
            finished_at=float(fields["finished_at"]) if fields["finished_at"] else None,
            error=TaskError(code, message) if code or message else None,
            idempotency_key=fields["idempotency_key"] or None,
            boot=fields.get("boot", ""),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"task hash of {fields.get('task_id')!r} is malformed: {exc}") from exc


EXCERPT_FIELD = "excerpt"
# What the monitor's recent list reads of a task hash (HMGET): no full text, no fingerprint.
SUMMARY_FIELDS = (
    "task_id",
    "state",
    "version",
    "worker",
    "created_at",
    "started_at",
    "finished_at",
    "error_code",
    "error_message",
    EXCERPT_FIELD,
)


def summary_from_values(values: Sequence[str | None]) -> TaskSummary | None:
    """A TaskSummary from the SUMMARY_FIELDS values of one hash, or None for a task gone
    (expired, or a barred start). A task written before excerpts were stored has none ("")."""
    fields = dict(zip(SUMMARY_FIELDS, values, strict=True))
    task_id, state, version, created_at = (
        fields["task_id"], fields["state"], fields["version"], fields["created_at"]
    )  # fmt: skip
    if not task_id or not state or not version or not created_at:
        return None
    code, message = fields["error_code"] or "", fields["error_message"] or ""
    return TaskSummary(
        task_id=task_id,
        state=TaskState(state),
        version=int(version),
        worker=fields["worker"] or "",
        created_at=float(created_at),
        started_at=float(fields["started_at"]) if fields["started_at"] else None,
        finished_at=float(fields["finished_at"]) if fields["finished_at"] else None,
        error=TaskError(code, message) if code or message else None,
        excerpt=fields[EXCERPT_FIELD] or "",
    )


def changed_fields(before: Task, after: Task) -> dict[str, str]:
    """The fields whose stored value differs between two versions of one task."""
    old = task_to_fields(before)
    return {name: value for name, value in task_to_fields(after).items() if old[name] != value}


def flatten(fields: Mapping[str, str]) -> list[str]:
    """`[field, value, field, value, ...]`, the shape HSET and the scripts' ARGV take."""
    return [item for pair in fields.items() for item in pair]


def event_to_json(event: TaskEvent) -> str:
    """The pub/sub payload of `event`: compact JSON, non-ASCII text left unescaped."""
    return json.dumps(task_to_fields(event.task), ensure_ascii=False, separators=(",", ":"))


def event_from_json(payload: str | bytes) -> TaskEvent:
    """Parse a pub/sub payload. Raises ValueError when it is not a task event."""
    try:
        fields = json.loads(payload)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"event payload is not JSON: {exc}") from exc
    if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
        raise ValueError("event payload is not an object of string fields")
    return TaskEvent(task_from_fields(fields))


def idempotency_value(task: Task) -> str:
    """The value stored under the task's Idempotency-Key: `<task_id> <fingerprint>`."""
    return f"{task.task_id} {task.fingerprint}"


def parse_idempotency_value(value: str) -> tuple[str, str]:
    """`(task_id, fingerprint)` of a stored Idempotency-Key value. Raises ValueError."""
    task_id, sep, fingerprint = value.partition(" ")
    if not sep or not task_id or not fingerprint:
        raise ValueError(f"idempotency value {value!r} is not '<task_id> <fingerprint>'")
    return task_id, fingerprint
