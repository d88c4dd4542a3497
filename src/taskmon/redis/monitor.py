"""Tasks, idempotency keys and counts in Redis: one truth for every worker of every host.

Each write is one Lua script (lua/task_*.lua), so a task, its key, its state index and the
counters change together or not at all, and a worker that dies mid-call leaves no half-write.
Legal moves are decided here, in Python, by domain.Task.transition; the scripts only
compare-and-set on the version, so a stale or repeated transition is a no-op.

redis-py retries a command whose reply was lost, which can run a script twice. Every write
therefore carries a fresh `op` token that the script stores in the task hash: a second run
finds its own token and reports success without writing again.

Retention: a live task has no TTL; a finished task expires `ttl_s` after its finish, and its
Idempotency-Key (set with that TTL at creation) gets the same TTL again at the finish, so a
replay within `ttl_s` of the finish still finds it. The done and failed counters count every
finish since the store began, so expiry never makes the success rate jump.

Every Redis connection failure or timeout is raised as BackendUnavailable (ping() answers
False instead). Writes take no pipeline: each is a script whose reply decides the result.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, cast

import redis

from taskmon.domain import (
    RECENT_MAX,
    IllegalTransition,
    RecentTasks,
    StartOutcome,
    StateCounts,
    Task,
    TaskError,
    TaskEvent,
    TaskState,
    idempotency_outcome,
    text_excerpt,
)
from taskmon.ports import BackendUnavailable, RestoreResult, StartResult, check_recent_limit
from taskmon.redis import codec
from taskmon.redis.errors import unavailable_as
from taskmon.redis.hub import RedisEventHub, RedisSubscription
from taskmon.redis.keys import Keys
from taskmon.redis.scripts import ScriptKeys, ScriptSet

# A claim whose task is gone is freed and the start retried; another client would have to
# claim the key and lose its task again in between for a third attempt to be needed.
_START_ATTEMPTS = 3
_COUNTED = ("queued", "running", "done", "failed")

# The keys each script takes, in KEYS order, as names of Keys attributes; the header of each
# lua/<script>.lua names the same ones. An `idempotency` key is passed only for a task that
# has an Idempotency-Key; `state_index` is the index of the state named beside it.
SCRIPT_KEYS: ScriptKeys = {
    "task_start": ("task", "state_index", "counters", "recent", "idempotency"),
    "task_settle_start": ("task",),
    "task_transition": ("task", "counters", "state_index", "state_index"),
    "task_finish": ("task", "counters", "state_index", "idempotency"),
    "task_restore": ("task", "counters", "state_index", "state_index", "recent", "idempotency"),
}


def stored_fields(task: Task) -> dict[str, str]:
    """The hash a script writes for a new or restored task: its fields, and the excerpt the
    recent list reads instead of the whole text (transitions never change it)."""
    return {**codec.task_to_fields(task), codec.EXCERPT_FIELD: text_excerpt(task.text)}


def load_task(client: redis.Redis, keys: Keys, task_id: str) -> Task | None:
    """The stored task, or None when unknown or expired. Usable as RedisEventHub's snapshot."""
    with unavailable_as(f"reading task {task_id}"):
        fields = cast("dict[str, str]", client.hgetall(keys.task(task_id)))
    if not fields or "void" in fields:  # a start barred by task_settle_start
        return None
    return codec.task_from_fields(fields)


class RedisTaskMonitor:
    """TaskMonitor on Redis. The client must decode responses (redis.connection.make_client)."""

    backend = "redis"

    def __init__(self, client: redis.Redis, keys: Keys, *, hub: RedisEventHub, ttl_s: int) -> None:
        if not client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("RedisTaskMonitor needs a client built with decode_responses=True")
        self.hub = hub
        self._client = client
        self._keys = keys
        self._ttl_s = ttl_s
        self._scripts = ScriptSet(client, SCRIPT_KEYS)

    def start(self, task: Task) -> StartResult:
        """Record a queued task atomically with its Idempotency-Key (see the port).

        A key whose task is already gone (expired a moment before the key did, or deleted) is
        treated as expired: the new task claims it. Raises ValueError when another task
        already has this task's id (ids are random; only a caller bug reuses one).
        """
        op, stale = uuid.uuid4().hex, ""
        for _ in range(_START_ATTEMPTS):
            reply = self._run_start(task, op, stale)
            if reply[0] == "created":
                return StartResult(StartOutcome.CREATED, task)
            if reply[0] == "exists":
                raise ValueError(f"task id {task.task_id} is already in use")
            stale = reply[1]
            claimed_id, _ = codec.parse_idempotency_value(stale)
            existing = self.get(claimed_id)
            if existing is not None:
                return StartResult(idempotency_outcome(existing, task.fingerprint), existing)
        raise BackendUnavailable(
            f"Idempotency-Key {task.idempotency_key!r} kept naming tasks that vanished; "
            "check Redis for evictions (maxmemory-policy) or manual deletes"
        )

    def settle_start(self, task: Task) -> bool:
        """Keep the task if its start landed, else bar a late copy of it (task_settle_start).

        Raises BackendUnavailable while Redis does not answer.
        """
        keys, args = [self._keys.task(task.task_id)], [self._ttl_s]
        with unavailable_as(f"settling the start of task {task.task_id}"):
            return bool(self._scripts["task_settle_start"](keys=keys, args=args))

    def _run_start(self, task: Task, op: str, stale: str) -> list[str]:
        keys = [self._keys.task(task.task_id), self._keys.state_index(TaskState.QUEUED)]
        keys += [self._keys.counters, self._keys.recent]
        idem: list[str] = ["", "", ""]
        if task.idempotency_key is not None:
            keys.append(self._keys.idempotency(task.idempotency_key))
            idem = [codec.idempotency_value(task), str(self._ttl_s), stale]
        args = [
            task.task_id,
            op,
            repr(float(task.created_at)),
            self._keys.task_channel(task.task_id),
            codec.event_to_json(TaskEvent(task)),
            *idem,
            str(RECENT_MAX),
            *codec.flatten(stored_fields(task)),
        ]
        with unavailable_as(f"starting task {task.task_id}"):
            return cast("list[str]", self._scripts["task_start"](keys=keys, args=args))

    def restore(self, task: Task) -> RestoreResult:
        """Write `task` back unless Redis has it at its version or newer (lua/task_restore.lua).

        A task Redis holds failed `abandoned` (a reaper's presumption) is overruled by its own
        worker's `done`, written one version past the stored one so no reader sees a version
        go backwards. Safe to repeat: a second run finds its own version stored and writes
        nothing. Raises BackendUnavailable when Redis does not answer.
        """
        reply = self._restore(task)
        if reply[0] == "behind":
            task = dataclasses.replace(task, version=int(reply[1]) + 1)
            reply = self._restore(task)
        written = reply[0] == "written"
        return RestoreResult(
            written=written,
            key_conflict=reply[1] == "key_conflict",
            stored=task if written else None,
        )

    def _restore(self, task: Task) -> list[str]:
        keys = [self._keys.task(task.task_id), self._keys.counters]
        keys += [
            self._keys.state_index(TaskState.QUEUED),
            self._keys.state_index(TaskState.RUNNING),
            self._keys.recent,
        ]
        idem_value = ""
        if task.idempotency_key is not None:
            keys.append(self._keys.idempotency(task.idempotency_key))
            idem_value = codec.idempotency_value(task)
        entered = task.started_at if task.state is TaskState.RUNNING else task.created_at
        args = [
            task.task_id,
            str(task.version),
            task.state.value,
            repr(float(entered or task.created_at)),
            str(self._ttl_s),
            self._keys.task_channel(task.task_id),
            codec.event_to_json(TaskEvent(task)),
            idem_value,
            task.worker,
            task.boot,
            repr(float(task.created_at)),
            str(RECENT_MAX),
            *codec.flatten(stored_fields(task)),
        ]
        with unavailable_as(f"writing back task {task.task_id}"):
            return cast("list[str]", self._scripts["task_restore"](keys=keys, args=args))

    def find_by_idempotency_key(self, key: str) -> Task | None:
        with unavailable_as("reading an Idempotency-Key"):
            value = cast("str | None", self._client.get(self._keys.idempotency(key)))
        if value is None:
            return None
        task_id, _ = codec.parse_idempotency_value(value)
        return self.get(task_id)

    def transition(
        self,
        task_id: str,
        *,
        expected_version: int,
        state: TaskState,
        now: float,
        error: TaskError | None = None,
        worker: str | None = None,
        known: Task | None = None,
    ) -> Task | None:
        """Move a task one step and publish the event (see the port).

        None, with nothing written or published, when the task is gone, not at
        `expected_version` (stale, repeated, or another worker won the race) or the move is
        illegal. With `known` (the caller's copy at `expected_version`) the HGETALL is skipped:
        a version names exactly one set of fields, and the script checks version and state.
        """
        usable = known is not None and (known.task_id, known.version) == (task_id, expected_version)
        current = known if usable else self.get(task_id)
        if current is None or current.version != expected_version:
            return None
        try:
            updated = current.transition(state, now=now, error=error, worker=worker)
        except IllegalTransition:
            return None
        return updated if self._apply(current, updated, now, uuid.uuid4().hex) else None

    def _apply(self, current: Task, updated: Task, now: float, op: str) -> bool:
        """Compare-and-set `current` -> `updated` in one script; False when it lost the race.

        Running it again with the same `op` (what a client retry does) returns True again and
        writes nothing.
        """
        task_id = current.task_id
        keys = [self._keys.task(task_id), self._keys.counters]
        keys.append(self._keys.state_index(current.state))
        args: list[Any] = [
            task_id,
            op,
            str(current.version),
            current.state.value,
            updated.state.value,
        ]
        tail = [self._keys.task_channel(task_id), codec.event_to_json(TaskEvent(updated))]
        changes = codec.flatten(codec.changed_fields(current, updated))
        if updated.state.terminal:
            name = "task_finish"
            idem_value = ""
            if current.idempotency_key is not None:
                keys.append(self._keys.idempotency(current.idempotency_key))
                idem_value = codec.idempotency_value(current)
            args += [str(self._ttl_s), *tail, idem_value, *changes]
        else:
            name = "task_transition"
            keys.append(self._keys.state_index(updated.state))
            args += [repr(float(now)), *tail, *changes]
        with unavailable_as(f"moving task {task_id} to {updated.state}"):
            return bool(self._scripts[name](keys=keys, args=args))

    def get(self, task_id: str) -> Task | None:
        return load_task(self._client, self._keys, task_id)

    def recent(self, limit: int) -> RecentTasks:
        """The newest `limit` ids of the recent index and the head of the queued index, then
        their summaries: two round trips, whatever `limit`, and no task's full text read (the
        excerpt is a field of its own). A listed task that expired meanwhile is left out.
        Raises ValueError for a limit outside 1..RECENT_MAX, BackendUnavailable when Redis
        does not answer."""
        check_recent_limit(limit)
        with unavailable_as("reading the recent tasks"):
            ids_pipe = self._client.pipeline(transaction=False)
            ids_pipe.zrevrange(self._keys.recent, 0, limit - 1)
            ids_pipe.zrange(self._keys.state_index(TaskState.QUEUED), 0, 0)
            newest, oldest = cast("list[list[str]]", ids_pipe.execute())
            fields_pipe = self._client.pipeline(transaction=False)
            for task_id in [*newest, *oldest]:
                fields_pipe.hmget(self._keys.task(task_id), codec.SUMMARY_FIELDS)
            rows = cast("list[list[str | None]]", fields_pipe.execute())
        summaries = [codec.summary_from_values(values) for values in rows]
        return RecentTasks(
            tasks=[summary for summary in summaries[: len(newest)] if summary is not None],
            oldest_queued=summaries[-1] if oldest else None,
        )

    def counts(self) -> StateCounts:
        with unavailable_as("reading the task counters"):
            values = cast("list[str | None]", self._client.hmget(self._keys.counters, _COUNTED))
        counted = zip(_COUNTED, values, strict=True)
        return StateCounts(**{name: int(value or 0) for name, value in counted})

    def subscribe(self, task_id: str) -> RedisSubscription:
        return self.hub.subscribe(task_id)

    def ping(self) -> bool:
        """True when Redis answers PING now, within the client's short timeouts. Never raises."""
        try:
            return bool(self._client.ping())
        except (redis.RedisError, OSError):
            return False

    def close(self) -> None:
        """Detach this monitor's subscriptions. The client and subscriber belong to the caller."""
        self.hub.close()
