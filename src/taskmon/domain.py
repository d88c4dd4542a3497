"""Tasks, their states and the rules between them. Pure: no I/O, no clocks, no threads.

A task moves queued -> running -> done, or to failed from queued or running. Every transition
adds exactly one to the version, so a version names one state of one task: SSE uses it as the
event id and the Redis scripts use it to turn stale or repeated transitions into no-ops.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

MAX_TEXT_CHARS = 5000
MAX_VOICE_CHARS = 64
MAX_IDEMPOTENCY_KEY_CHARS = 255
# The monitor's list of recent tasks: how many the stores index, and how much text it shows.
RECENT_MAX = 200
EXCERPT_CHARS = 80
TASK_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
# Visible ASCII only: keys end up in logs and Redis key names.
IDEMPOTENCY_KEY_PATTERN = re.compile(rf"^[\x21-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_CHARS}}}$")


class TaskState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (TaskState.DONE, TaskState.FAILED)


ALLOWED_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.QUEUED: frozenset({TaskState.RUNNING, TaskState.FAILED}),
    TaskState.RUNNING: frozenset({TaskState.DONE, TaskState.FAILED}),
    TaskState.DONE: frozenset(),
    TaskState.FAILED: frozenset(),
}


class ErrorCode(StrEnum):
    ENGINE_ERROR = "engine_error"
    ABANDONED = "abandoned"
    PERMIT_TIMEOUT = "permit_timeout"
    STORAGE_ERROR = "storage_error"
    LEASE_LOST = "lease_lost"


class InvalidInput(ValueError):
    """A request field breaks a documented rule; the message says which and why."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field_name = field_name


class IllegalTransition(ValueError):
    """A transition the state machine does not allow (e.g. done -> running)."""


@dataclass(frozen=True, slots=True)
class TaskError:
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """A validated synthesis request: what the client asked for, nothing else."""

    text: str
    voice: str | None = None

    @classmethod
    def parse(cls, payload: Any) -> TaskRequest:
        """Validate a decoded JSON body. Raises InvalidInput naming the offending field."""
        if not isinstance(payload, dict):
            raise InvalidInput("body", "must be a JSON object")
        unknown = set(payload) - {"text", "voice"}
        if unknown:
            raise InvalidInput(sorted(unknown)[0], "unknown field")
        text = payload.get("text")
        if not isinstance(text, str):
            raise InvalidInput("text", "is required and must be a string")
        _check_unicode("text", text)
        if not text.strip():
            raise InvalidInput("text", "must contain at least one non-blank character")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidInput("text", f"has {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
        voice = payload.get("voice")
        if voice is not None and (
            not isinstance(voice, str) or not 0 < len(voice) <= MAX_VOICE_CHARS
        ):
            raise InvalidInput("voice", f"must be a string of 1 to {MAX_VOICE_CHARS} characters")
        if voice is not None:
            _check_unicode("voice", voice)
        return cls(text=text, voice=voice)

    def fingerprint(self) -> str:
        """A digest of the payload: one Idempotency-Key may only ever carry one fingerprint."""
        canonical = json.dumps(
            {"text": self.text, "voice": self.voice}, sort_keys=True, ensure_ascii=False
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def _check_unicode(field_name: str, value: str) -> None:
    """JSON's `\\ud800` escapes decode to lone surrogates, which no UTF-8 store, log or engine
    can take: refuse them here (400) rather than fail on the first encode (a 500)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            field_name, f"has a lone surrogate at character {exc.start}: not valid Unicode"
        ) from None


def new_task_id() -> str:
    return uuid.uuid4().hex


def check_task_id(task_id: str) -> str:
    """Reject malformed ids before any lookup touches a store."""
    if not TASK_ID_PATTERN.fullmatch(task_id):
        raise InvalidInput("task_id", "must be 32 lowercase hexadecimal characters")
    return task_id


def check_idempotency_key(key: str) -> str:
    if not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
        raise InvalidInput(
            "Idempotency-Key",
            f"must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters",
        )
    return key


def worker_key(worker: str, boot: str) -> str:
    """A worker process's full identity: `<worker>/<boot>`, or the bare name for a worker of
    an older version, which had no boot id. The registry lists workers by it and the reaper
    judges a task by it; the public X-Worker-Id stays the bare name."""
    return f"{worker}/{boot}" if boot else worker


def public_name(identity: str) -> str:
    """The X-Worker-Id of a full identity (`<worker>/<boot>`, or a bare older-version name)."""
    return identity.partition("/")[0]


@dataclass(frozen=True, slots=True)
class Task:
    """One synthesis task as every worker sees it. Immutable: transitions return a new Task.

    `worker` is the public name of the worker process that holds it (`<hostname>:<pid>`, the
    X-Worker-Id); `boot` is that process's random boot id, so two processes of one name (a
    container restarted with the same pid, two containers sharing hostname and pid) never
    pass for each other when the reaper judges who is alive. The boot is the accepting
    worker's and never changes: a task runs where it was accepted. Empty in records an older
    version wrote. Never shown in the status.
    """

    task_id: str
    text: str
    voice: str | None
    fingerprint: str
    state: TaskState
    version: int
    created_at: float
    worker: str
    started_at: float | None = None
    finished_at: float | None = None
    error: TaskError | None = None
    idempotency_key: str | None = field(default=None, compare=False)
    boot: str = ""

    @property
    def owner(self) -> str:
        """The full identity of the worker that holds it (see `worker_key`)."""
        return worker_key(self.worker, self.boot)

    @classmethod
    def create(
        cls,
        request: TaskRequest,
        *,
        worker: str,
        now: float,
        task_id: str | None = None,
        idempotency_key: str | None = None,
        boot: str = "",
    ) -> Task:
        return cls(
            task_id=task_id or new_task_id(),
            text=request.text,
            voice=request.voice,
            fingerprint=request.fingerprint(),
            state=TaskState.QUEUED,
            version=1,
            created_at=now,
            worker=worker,
            idempotency_key=idempotency_key,
            boot=boot,
        )

    def can_become(self, state: TaskState) -> bool:
        return state in ALLOWED_TRANSITIONS[self.state]

    def transition(
        self,
        state: TaskState,
        *,
        now: float,
        error: TaskError | None = None,
        worker: str | None = None,
    ) -> Task:
        """The task one step later. Raises IllegalTransition for a move the rules forbid."""
        if not self.can_become(state):
            raise IllegalTransition(f"task {self.task_id}: {self.state} -> {state} is not allowed")
        if (state is TaskState.FAILED) != (error is not None):
            raise IllegalTransition("an error is given exactly when a task fails")
        return replace(
            self,
            state=state,
            version=self.version + 1,
            started_at=now if state is TaskState.RUNNING else self.started_at,
            finished_at=now if state.terminal else None,
            error=error,
            worker=worker or self.worker,
        )

    def status(self) -> dict[str, Any]:
        """The public status fields, without URLs (the web layer adds result_url)."""
        return {
            "task_id": self.task_id,
            "state": self.state.value,
            "version": self.version,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "worker": self.worker,
            "error": self.error.to_dict() if self.error else None,
        }


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """What a transition emits: the task as it is right after the change."""

    task: Task

    @property
    def version(self) -> int:
        return self.task.version

    @property
    def terminal(self) -> bool:
        return self.task.state.terminal


@dataclass(frozen=True, slots=True)
class StateCounts:
    """queued and running are current; done and failed count every finish since the store began.

    So queued + running + done + failed == total at every instant, and retention expiring old
    tasks does not make the success rate jump.
    """

    queued: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.queued + self.running + self.done + self.failed

    @property
    def success_rate(self) -> float | None:
        finished = self.done + self.failed
        return None if finished == 0 else self.done / finished

    def to_dict(self) -> dict[str, int]:
        return {
            "queued": self.queued,
            "running": self.running,
            "done": self.done,
            "failed": self.failed,
        }


class StartOutcome(StrEnum):
    CREATED = "created"
    REPLAYED = "replayed"
    CONFLICT = "conflict"


def idempotency_outcome(existing: Task | None, fingerprint: str) -> StartOutcome:
    """The IETF Idempotency-Key rule: one key, one payload; the same payload again replays."""
    if existing is None:
        return StartOutcome.CREATED
    if existing.fingerprint == fingerprint:
        return StartOutcome.REPLAYED
    return StartOutcome.CONFLICT


def overrules_abandoned(stored: Task, copy: Task) -> bool:
    """A written-back `copy` that outranks the store's finished `stored`: the task's own
    worker's `done` against a reaper's `abandoned`. The reaper presumes its worker dead from a
    lapsed heartbeat, which looks the same when the worker was only cut off from the store and
    finished the task meanwhile; the worker's done is what happened. Any other finish is final.
    """
    return (
        stored.state is TaskState.FAILED
        and stored.error is not None
        and stored.error.code == ErrorCode.ABANDONED.value
        and copy.state is TaskState.DONE
        and copy.owner == stored.owner
    )


def text_excerpt(text: str) -> str:
    """The start of a task's text for the monitor's list: whitespace runs folded to one space,
    at most EXCERPT_CHARS characters (an ellipsis marks a cut). Plain text: never markup."""
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[: EXCERPT_CHARS - 1] + "\u2026"


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """A task as the monitor page lists it: its state and times, an excerpt of its text (the
    full text stays out of a list read every few seconds), no fingerprint or key."""

    task_id: str
    state: TaskState
    version: int
    worker: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: TaskError | None = None
    excerpt: str = ""

    @classmethod
    def of(cls, task: Task) -> TaskSummary:
        return cls(
            task_id=task.task_id,
            state=task.state,
            version=task.version,
            worker=task.worker,
            created_at=task.created_at,
            started_at=task.started_at,
            finished_at=task.finished_at,
            error=task.error,
            excerpt=text_excerpt(task.text),
        )


@dataclass(frozen=True, slots=True)
class RecentTasks:
    """What the monitor lists: the newest tasks still kept, newest first, and the task that has
    waited longest in the queue (None when nothing is queued)."""

    tasks: list[TaskSummary]
    oldest_queued: TaskSummary | None
