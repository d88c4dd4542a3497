"""redis/codec.py: Task <-> hash fields <-> event JSON, without a Redis."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskmon.domain import Task, TaskError, TaskEvent, TaskRequest, TaskState
from taskmon.redis import codec

BOOM = TaskError("engine_error", "boom")


def queued(text: str = "hello", voice: str | None = None, key: str | None = None) -> Task:
    return Task.create(TaskRequest(text, voice), worker="h:1", now=1.5, idempotency_key=key)


def roundtrip(task: Task) -> Task:
    back = codec.task_from_fields(codec.task_to_fields(task))
    assert back.idempotency_key == task.idempotency_key  # not part of Task equality
    return back


def test_every_field_is_a_string_and_always_present() -> None:
    fields = codec.task_to_fields(queued())
    assert tuple(fields) == codec.TASK_FIELDS + codec.OPTIONAL_FIELDS
    assert all(isinstance(value, str) for value in fields.values())
    assert fields["voice"] == fields["started_at"] == fields["error_code"] == ""
    assert fields["version"] == "1"
    assert fields["state"] == "queued"


def test_a_record_or_event_an_older_version_wrote_reads_with_an_empty_boot() -> None:
    """An older version wrote no `boot`: its records and events still read, boot empty."""
    task = queued()
    fields = codec.task_to_fields(dataclasses.replace(task, boot="0a1b2c3d"))
    assert codec.task_from_fields(fields).boot == "0a1b2c3d"
    del fields["boot"]
    assert codec.task_from_fields(fields) == task
    legacy_event = json.dumps(fields)
    assert codec.event_from_json(legacy_event).task.boot == ""


@pytest.mark.parametrize(
    "task",
    [
        queued(),
        queued("grüße, 你好 🎉", voice="en-us", key="order-42"),
        queued().transition(TaskState.RUNNING, now=2.25, worker="h:2"),
        queued(key="k").transition(TaskState.RUNNING, now=2.0).transition(TaskState.DONE, now=3),
        queued().transition(TaskState.FAILED, now=0.1 + 0.2, error=BOOM),
        queued("x" * 5000),
    ],
    ids=["queued", "unicode-voice-key", "running", "done", "failed", "longest-text"],
)
def test_fields_roundtrip(task: Task) -> None:
    assert roundtrip(task) == task
    event = codec.event_from_json(codec.event_to_json(TaskEvent(task)))
    assert event == TaskEvent(task)
    assert event.task.idempotency_key == task.idempotency_key


task_ids = st.text("0123456789abcdef", min_size=32, max_size=32)
timestamps = st.floats(min_value=0, max_value=4e9, allow_nan=False)
maybe_time = st.none() | timestamps
names = st.text(min_size=1, max_size=40)
errors = st.none() | st.builds(TaskError, code=names, message=st.text(max_size=80))
keys = st.none() | st.from_regex(r"[\x21-\x7e]{1,40}", fullmatch=True)


@given(
    st.builds(
        Task,
        task_id=task_ids,
        text=st.text(min_size=1, max_size=300),
        voice=st.none() | names,
        fingerprint=st.text("0123456789abcdef", min_size=64, max_size=64),
        state=st.sampled_from(TaskState),
        version=st.integers(min_value=1, max_value=2**62),
        created_at=timestamps,
        worker=names,
        started_at=maybe_time,
        finished_at=maybe_time,
        error=errors,
        idempotency_key=keys,
    )
)
def test_any_task_roundtrips_exactly(task: Task) -> None:
    assert roundtrip(task) == task
    assert codec.event_from_json(codec.event_to_json(TaskEvent(task))).task == task


def test_timestamps_roundtrip_to_the_bit() -> None:
    for now in (0.1 + 0.2, 1e-300, 1_700_000_000.123456789, 5e-324, 3):
        task = queued().transition(TaskState.RUNNING, now=now)
        back = roundtrip(task)
        assert back.started_at == now
        assert isinstance(back.started_at, float)


def test_none_is_stored_as_empty_and_empty_reads_as_none() -> None:
    """The documented limit: an empty voice (which TaskRequest.parse rejects) reads as None."""
    task = queued()
    fields = codec.task_to_fields(task) | {"voice": ""}
    assert codec.task_from_fields(fields).voice is None
    assert codec.task_from_fields(codec.task_to_fields(task)).error is None
    with_message_only = codec.task_to_fields(task) | {"error_message": "m"}
    assert codec.task_from_fields(with_message_only).error == TaskError("", "m")


def test_changed_fields_of_each_transition() -> None:
    task = queued(key="k")
    running = task.transition(TaskState.RUNNING, now=2.0, worker="h:2")
    assert codec.changed_fields(task, running) == {
        "state": "running",
        "version": "2",
        "started_at": "2.0",
        "worker": "h:2",
    }
    failed = running.transition(TaskState.FAILED, now=3.0, error=BOOM)
    assert codec.changed_fields(running, failed) == {
        "state": "failed",
        "version": "3",
        "finished_at": "3.0",
        "error_code": "engine_error",
        "error_message": "boom",
    }
    assert codec.changed_fields(task, task) == {}


def test_flatten_is_hset_shaped() -> None:
    assert codec.flatten({"a": "1", "b": "2"}) == ["a", "1", "b", "2"]
    assert codec.flatten({}) == []


def test_event_json_is_compact_and_keeps_text_unescaped() -> None:
    task = queued('你好 "quoted"\n', key="k")
    payload = codec.event_to_json(TaskEvent(task))
    assert "你好" in payload
    assert ", " not in payload
    assert json.loads(payload) == codec.task_to_fields(task)
    assert codec.event_from_json(payload.encode()).task == task


def test_fields_that_are_not_the_tasks_are_ignored() -> None:
    task = queued()
    fields = codec.task_to_fields(task) | {"op": "0123abcd"}
    assert codec.task_from_fields(fields) == task


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"state": "lost"}, "malformed"),
        ({"version": "two"}, "malformed"),
        ({"created_at": ""}, "malformed"),
        ({"started_at": "soon"}, "malformed"),
    ],
)
def test_malformed_fields_raise_value_error(change: dict[str, str], message: str) -> None:
    fields = codec.task_to_fields(queued()) | change
    with pytest.raises(ValueError, match=message):
        codec.task_from_fields(fields)


def test_missing_fields_are_named() -> None:
    fields = codec.task_to_fields(queued())
    del fields["text"], fields["worker"]
    with pytest.raises(ValueError, match="text, worker"):
        codec.task_from_fields(fields)
    with pytest.raises(ValueError, match="lacks"):
        codec.task_from_fields({})


@pytest.mark.parametrize(
    "payload", ["not json", "[1, 2]", '{"task_id": 1}', "null", b"\xff", '{"state": "queued"}']
)
def test_malformed_events_raise_value_error(payload: str | bytes) -> None:
    with pytest.raises(ValueError, match=r"payload|lacks"):
        codec.event_from_json(payload)


def test_idempotency_value_roundtrip() -> None:
    task = queued(key="k")
    value = codec.idempotency_value(task)
    assert value == f"{task.task_id} {task.fingerprint}"
    assert codec.parse_idempotency_value(value) == (task.task_id, task.fingerprint)
    for bad in ("", "only-id", " fingerprint", "id "):
        with pytest.raises(ValueError, match="task_id"):
            codec.parse_idempotency_value(bad)
