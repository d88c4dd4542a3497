"""The pure domain: request validation, ids and keys, the task state machine, counts."""

from __future__ import annotations

import hashlib
import itertools
import json
import uuid
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskmon.domain import (
    ALLOWED_TRANSITIONS,
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_TEXT_CHARS,
    MAX_VOICE_CHARS,
    IllegalTransition,
    InvalidInput,
    StartOutcome,
    StateCounts,
    Task,
    TaskError,
    TaskEvent,
    TaskRequest,
    TaskState,
    check_idempotency_key,
    check_task_id,
    idempotency_outcome,
    new_task_id,
    overrules_abandoned,
    worker_key,
)
from tests.support.tasks import BOOM, DONE, FAILED, QUEUED, RUNNING

TASK_ID = "0123456789abcdef0123456789abcdef"


def new_task(**kwargs: Any) -> Task:
    defaults: dict[str, Any] = {"worker": "host:1", "now": 100.0, "task_id": TASK_ID}
    return Task.create(TaskRequest("hello", "low"), **(defaults | kwargs))


def task_in(state: TaskState) -> Task:
    """A task brought to `state` through legal steps only."""
    task = new_task()
    paths: dict[TaskState, list[tuple[TaskState, TaskError | None]]] = {
        QUEUED: [],
        RUNNING: [(RUNNING, None)],
        DONE: [(RUNNING, None), (DONE, None)],
        FAILED: [(FAILED, BOOM)],
    }
    for step, (target, error) in enumerate(paths[state], start=1):
        task = task.transition(target, now=100.0 + step, error=error)
    assert task.state is state
    return task


# --- TaskRequest.parse --------------------------------------------------------------------------


def test_parse_valid_request() -> None:
    assert TaskRequest.parse({"text": "hello"}) == TaskRequest("hello", None)
    assert TaskRequest.parse({"text": "hi", "voice": "low"}) == TaskRequest("hi", "low")
    assert TaskRequest.parse({"text": "hi", "voice": None}) == TaskRequest("hi", None)


def expect_invalid(payload: Any, field: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        TaskRequest.parse(payload)
    assert caught.value.field_name == field
    assert str(caught.value).startswith(f"{field}: ")
    assert isinstance(caught.value, ValueError)
    return caught.value


def test_parse_missing_text() -> None:
    expect_invalid({}, "text")
    expect_invalid({"voice": "low"}, "text")


@pytest.mark.parametrize("text", [None, 5, 1.5, True, ["a"], {"a": "b"}, b"bytes"])
def test_parse_non_string_text(text: Any) -> None:
    error = expect_invalid({"text": text}, "text")
    assert "must be a string" in str(error)


@pytest.mark.parametrize("text", ["", " ", "   \t\n\r ", "\u3000"])
def test_parse_blank_text(text: str) -> None:
    error = expect_invalid({"text": text}, "text")
    assert "non-blank" in str(error)


def test_parse_text_length_limit() -> None:
    assert MAX_TEXT_CHARS == 5000
    assert TaskRequest.parse({"text": "x" * 5000}).text == "x" * 5000
    error = expect_invalid({"text": "x" * 5001}, "text")
    assert "5001" in str(error)
    assert "5000" in str(error)


def test_parse_text_length_counts_characters_not_bytes() -> None:
    # 5000 characters of 3 UTF-8 bytes each are still 5000 characters.
    assert len(TaskRequest.parse({"text": "€" * 5000}).text) == 5000


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"text": "\ud800"}, "text"),
        ({"text": "ok \udfff"}, "text"),
        ({"text": "hi", "voice": "en\ud83d"}, "voice"),
    ],
)
def test_parse_lone_surrogates(payload: dict[str, Any], field: str) -> None:
    # What `json.loads('"\\ud800"')` returns: a str no UTF-8 encoder takes (was a 500).
    error = expect_invalid(payload, field)
    assert "lone surrogate" in str(error)
    assert TaskRequest.parse({"text": "\U0001f600 a pair is fine"}).text.startswith("\U0001f600")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"text": "hi", "speed": 2}, "speed"),
        ({"text": "hi", "Text": "x"}, "Text"),
        ({"text": "hi", "zeta": 1, "alpha": 2}, "alpha"),  # the first in sorted order
        ({"extra": 1}, "extra"),  # unknown fields are reported before the missing text
    ],
)
def test_parse_unknown_field(payload: dict[str, Any], field: str) -> None:
    error = expect_invalid(payload, field)
    assert "unknown field" in str(error)


@pytest.mark.parametrize("payload", [None, [], ["text"], "text", 5, 1.0, True])
def test_parse_non_object_body(payload: Any) -> None:
    error = expect_invalid(payload, "body")
    assert "JSON object" in str(error)


def test_parse_voice_rules() -> None:
    assert MAX_VOICE_CHARS == 64
    assert TaskRequest.parse({"text": "a", "voice": "v" * 64}).voice == "v" * 64
    assert TaskRequest.parse({"text": "a", "voice": "x"}).voice == "x"
    for bad in ["", "v" * 65, 5, ["low"], {"v": 1}, True]:
        error = expect_invalid({"text": "a", "voice": bad}, "voice")
        assert "a string of 1 to 64 characters" in str(error)


# --- fingerprint --------------------------------------------------------------------------------


def test_fingerprint_is_a_stable_sha256_of_the_canonical_payload() -> None:
    request = TaskRequest("héllo", "low")
    canonical = json.dumps({"text": "héllo", "voice": "low"}, sort_keys=True, ensure_ascii=False)
    assert request.fingerprint() == hashlib.sha256(canonical.encode()).hexdigest()
    assert request.fingerprint() == TaskRequest("héllo", "low").fingerprint()
    assert len(request.fingerprint()) == 64


def test_fingerprint_ignores_key_order_of_the_body() -> None:
    first = TaskRequest.parse({"text": "a", "voice": "low"})
    second = TaskRequest.parse({"voice": "low", "text": "a"})
    assert first.fingerprint() == second.fingerprint()


def test_fingerprint_is_sensitive_to_every_field() -> None:
    prints = {
        TaskRequest("a").fingerprint(),
        TaskRequest("a ").fingerprint(),
        TaskRequest("A").fingerprint(),
        TaskRequest("a", "low").fingerprint(),
        TaskRequest("a", "high").fingerprint(),
        TaskRequest("a", "None").fingerprint(),
        TaskRequest("a", "null").fingerprint(),
        # A naive "text + voice" concatenation would make these two equal.
        TaskRequest("ab", "c").fingerprint(),
        TaskRequest("a", "bc").fingerprint(),
    }
    assert len(prints) == 9


# --- ids and keys -------------------------------------------------------------------------------


def test_check_task_id_accepts_new_ids() -> None:
    for _ in range(20):
        task_id = new_task_id()
        assert check_task_id(task_id) == task_id
    assert check_task_id(TASK_ID) == TASK_ID


@pytest.mark.parametrize(
    "task_id",
    [
        "",
        "0" * 31,
        "0" * 33,
        TASK_ID.upper(),
        "g" * 32,
        str(uuid.UUID(TASK_ID)),  # the dashed form
        TASK_ID + "\n",
        "\n" + TASK_ID,
        " " + TASK_ID[1:],
        "../" + TASK_ID[3:],
        "0123456789abcdef0123456789abcde\u0661",  # a non-ASCII digit
    ],
)
def test_check_task_id_rejects_malformed(task_id: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_task_id(task_id)
    assert caught.value.field_name == "task_id"
    assert "32 lowercase hexadecimal characters" in str(caught.value), "the 400 says the rule"


@pytest.mark.parametrize("key", ["a", "x" * 255, "!~", "order-42:retry/1", "A.b_c=d"])
def test_check_idempotency_key_accepts(key: str) -> None:
    assert MAX_IDEMPOTENCY_KEY_CHARS == 255
    assert check_idempotency_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["", "x" * 256, "has space", " lead", "trail ", "tab\there", "clé", "ключ", "new\nline", "k\n"],
)
def test_check_idempotency_key_rejects(key: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_idempotency_key(key)
    assert caught.value.field_name == "Idempotency-Key"
    assert "1 to 255 visible ASCII characters" in str(caught.value), "the 400 says the rule"


# --- Task.create and the state machine ----------------------------------------------------------


def test_create_makes_a_queued_task_at_version_1() -> None:
    task = Task.create(TaskRequest("hello", "low"), worker="w:1", now=5.0, idempotency_key="k")
    assert task.state is QUEUED
    assert task.version == 1
    assert task.created_at == 5.0
    assert task.worker == "w:1"
    assert (task.started_at, task.finished_at, task.error) == (None, None, None)
    assert (task.text, task.voice) == ("hello", "low")
    assert task.fingerprint == TaskRequest("hello", "low").fingerprint()
    assert task.idempotency_key == "k"
    assert check_task_id(task.task_id) == task.task_id
    other = Task.create(TaskRequest("hello", "low"), worker="w:1", now=5.0)
    assert other.task_id != task.task_id
    assert Task.create(TaskRequest("x"), worker="w", now=0, task_id=TASK_ID).task_id == TASK_ID


def test_allowed_transitions_are_the_documented_ones() -> None:
    assert {
        QUEUED: {RUNNING, FAILED},
        RUNNING: {DONE, FAILED},
        DONE: set(),
        FAILED: set(),
    } == ALLOWED_TRANSITIONS
    assert {s for s in TaskState if s.terminal} == {DONE, FAILED}


ALL_PAIRS = list(itertools.product(TaskState, TaskState))


@pytest.mark.parametrize(("source", "target"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_every_transition_pair(source: TaskState, target: TaskState) -> None:
    task = task_in(source)
    error = BOOM if target is FAILED else None
    if target in ALLOWED_TRANSITIONS[source]:
        assert task.can_become(target)
        moved = task.transition(target, now=500.0, error=error)
        assert moved.state is target
        assert moved.version == task.version + 1
        assert moved.error == error
        assert task.state is source, "the original task is immutable"
    else:
        assert not task.can_become(target)
        with pytest.raises(IllegalTransition):
            task.transition(target, now=500.0, error=error)
        assert task.state is source


def test_happy_path_versions_and_timestamps() -> None:
    queued = new_task()
    running = queued.transition(RUNNING, now=101.0, worker="other:2")
    done = running.transition(DONE, now=102.5)
    assert [t.version for t in (queued, running, done)] == [1, 2, 3]
    assert (running.started_at, running.finished_at) == (101.0, None)
    assert (done.started_at, done.finished_at) == (101.0, 102.5)
    assert done.created_at == queued.created_at == 100.0
    assert running.worker == "other:2"
    assert done.worker == "other:2", "a transition without worker keeps the last one"
    assert done.error is None
    assert (done.task_id, done.text, done.fingerprint) == (
        queued.task_id,
        queued.text,
        queued.fingerprint,
    )


def test_fail_from_queued_and_from_running() -> None:
    failed_early = new_task().transition(FAILED, now=103.0, error=BOOM)
    assert failed_early.version == 2
    assert failed_early.started_at is None
    assert failed_early.finished_at == 103.0
    assert failed_early.error == BOOM
    failed_late = task_in(RUNNING).transition(FAILED, now=104.0, error=BOOM)
    assert failed_late.version == 3
    assert failed_late.started_at == 101.0
    assert failed_late.finished_at == 104.0


def test_error_is_required_exactly_for_failed() -> None:
    with pytest.raises(IllegalTransition):
        new_task().transition(FAILED, now=1.0)
    with pytest.raises(IllegalTransition):
        task_in(RUNNING).transition(FAILED, now=1.0)
    with pytest.raises(IllegalTransition):
        new_task().transition(RUNNING, now=1.0, error=BOOM)
    with pytest.raises(IllegalTransition):
        task_in(RUNNING).transition(DONE, now=1.0, error=BOOM)


def test_done_stays_done() -> None:
    done = task_in(DONE)
    for target in TaskState:
        with pytest.raises(IllegalTransition):
            done.transition(target, now=1.0, error=BOOM if target is FAILED else None)
    assert done.state is DONE
    assert done.version == 3


def test_status_fields() -> None:
    failed = new_task().transition(FAILED, now=101.0, error=BOOM)
    assert failed.status() == {
        "task_id": TASK_ID,
        "state": "failed",
        "version": 2,
        "created_at": 100.0,
        "started_at": None,
        "finished_at": 101.0,
        "worker": "host:1",
        "error": {"code": "engine_error", "message": "boom"},
    }
    assert new_task().status()["error"] is None


def test_idempotency_key_does_not_affect_equality() -> None:
    assert new_task(idempotency_key="a") == new_task(idempotency_key="b")


def test_task_event() -> None:
    running = task_in(RUNNING)
    assert TaskEvent(running).version == 2
    assert not TaskEvent(running).terminal
    assert TaskEvent(task_in(DONE)).terminal
    assert TaskEvent(task_in(FAILED)).terminal


# --- idempotency_outcome and StateCounts --------------------------------------------------------


def test_idempotency_outcome() -> None:
    stored = new_task()
    assert idempotency_outcome(None, stored.fingerprint) is StartOutcome.CREATED
    assert idempotency_outcome(stored, stored.fingerprint) is StartOutcome.REPLAYED
    assert idempotency_outcome(stored, TaskRequest("other").fingerprint()) is StartOutcome.CONFLICT
    # The state of the stored task does not matter, only its payload.
    assert idempotency_outcome(task_in(FAILED), stored.fingerprint) is StartOutcome.REPLAYED


def test_state_counts() -> None:
    empty = StateCounts()
    assert empty.total == 0
    assert empty.success_rate is None
    busy = StateCounts(queued=3, running=2)
    assert busy.total == 5
    assert busy.success_rate is None, "nothing finished yet: no rate, not 0"
    counts = StateCounts(queued=1, running=2, done=3, failed=1)
    assert counts.total == 7
    assert counts.success_rate == pytest.approx(0.75)
    assert StateCounts(failed=2).success_rate == 0.0
    assert StateCounts(done=2).success_rate == 1.0
    assert counts.to_dict() == {"queued": 1, "running": 2, "done": 3, "failed": 1}


# --- property: versions count successful steps, states never go back ---------------------------

RANK = {QUEUED: 0, RUNNING: 1, DONE: 2, FAILED: 2}


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(TaskState)),
            st.booleans(),
            st.sampled_from([None, "", "w:2", "w:3"]),
        ),
        max_size=12,
    )
)
def test_any_sequence_of_attempts(attempts: list[tuple[TaskState, bool, str | None]]) -> None:
    task = new_task()
    successes = 0
    for step, (target, with_error, worker) in enumerate(attempts):
        before = task
        try:
            task = task.transition(
                target, now=200.0 + step, error=BOOM if with_error else None, worker=worker
            )
        except IllegalTransition:
            assert task is before
        else:
            successes += 1
            assert target in ALLOWED_TRANSITIONS[before.state]
            assert with_error == (target is FAILED)
            assert RANK[task.state] > RANK[before.state], "a state never goes back"
        assert task.version == 1 + successes
        if before.state.terminal:
            assert task is before, "a terminal state is absorbing"
        assert (task.finished_at is not None) == task.state.terminal
        assert (task.error is not None) == (task.state is FAILED)
    assert successes <= 2


def test_the_boot_keeps_to_the_task_and_out_of_its_status() -> None:
    """The boot tells two processes of one name apart; the public status shows the name only."""
    task = new_task(boot="0a1b2c3d")
    assert (task.worker, task.owner) == ("host:1", "host:1/0a1b2c3d")
    done = task.transition(RUNNING, now=101.0, worker="host:1").transition(DONE, now=102.0)
    assert done.owner == "host:1/0a1b2c3d", "a task's boot never changes"
    assert done.status()["worker"] == "host:1"
    assert "boot" not in done.status()
    assert new_task().owner == worker_key("host:1", "") == "host:1", "an older version's record"


def test_only_the_same_boots_done_overrules_an_abandoned() -> None:
    running = new_task(boot="aaaaaaaa").transition(RUNNING, now=101.0)
    abandoned = running.transition(FAILED, now=102.0, error=TaskError("abandoned", "stopped"))
    done = running.transition(DONE, now=102.0)
    assert overrules_abandoned(abandoned, done)
    assert not overrules_abandoned(abandoned, replace(done, boot="bbbbbbbb"))
