"""The load run's judges on evidence built by hand: each must flag the run that breaks its
invariant, pass the run that keeps it, and say unknown, never pass, when there is no data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from loadtests.evidence import Evidence, Sample, SweepResult, read_records
from loadtests.report import EXIT_INVARIANT, EXIT_OK, EXIT_SLO, EXIT_UNKNOWN, exit_code
from loadtests.slo import Check, judge_slo, load_slo, percentile, sse_timings
from loadtests.verdicts import (
    FAIL,
    PASS,
    UNKNOWN,
    judge_cap_from_journals,
    judge_cap_from_permits,
    judge_events,
    judge_idempotency,
    judge_liveness,
    judge_monotonic,
    judge_visibility,
)

A, B = "host:1", "host:2"


def accepted(task: str, worker: str = A, key: str | None = None, t: float = 1.0) -> dict[str, Any]:
    return {"k": "accepted", "t": t, "task": task, "worker": worker, "status": 202, "key": key}


def read(
    task: str,
    worker: str,
    status: int = 200,
    *,
    version: int = 1,
    state: str = "queued",
    obs: str = "poll-1",
    t: float = 2.0,
) -> dict[str, Any]:
    found = status == 200
    return {
        "k": "read", "t": t, "obs": obs, "task": task, "worker": worker, "status": status,
        "version": version if found else None, "state": state if found else None,
    }  # fmt: skip


def stream(
    task: str,
    worker: str,
    events: list[list[Any]],
    status: int = 200,
    *,
    ended: bool = True,
    obs: str = "stream-1",
) -> dict[str, Any]:
    return {
        "k": "stream", "t": 2.0, "obs": obs, "task": task, "worker": worker, "status": status,
        "outcome": "ok" if status == 200 else "unexpected", "events": events, "ended": ended,
        "left_early": False, "resumed_from": None,
    }  # fmt: skip


def evidence(*records: dict[str, Any], **kwargs: Any) -> Evidence:
    return Evidence(records=list(records), limit=2, workers=4, **kwargs)


def write_journal(directory: Path, lines: list[tuple[int, str, str]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "journal-1.jsonl").open("w") as out:
        for t, event, task in lines:
            out.write(json.dumps({"t": t, "event": event, "task": task, "pid": 1, "fencing": 1}))
            out.write("\n")
    return directory


# --- I1 ------------------------------------------------------------------------------------------


def test_the_cap_fails_when_the_journals_show_more_than_the_limit(tmp_path: Path) -> None:
    journal = write_journal(
        tmp_path,
        [(1, "start", "a"), (2, "start", "b"), (3, "start", "c"), (4, "end", "a"),
         (5, "end", "b"), (6, "end", "c")],
    )  # fmt: skip
    verdict = judge_cap_from_journals(evidence(journal_dir=journal))
    assert verdict.status == FAIL
    assert verdict.counts["peak"] == 3
    assert "3 running" in verdict.examples[0]
    assert "task c" in verdict.examples[0]


def test_the_cap_passes_at_the_limit_and_is_unknown_without_syntheses(tmp_path: Path) -> None:
    journal = write_journal(
        tmp_path / "j", [(1, "start", "a"), (2, "start", "b"), (3, "end", "a"), (3, "start", "c")]
    )
    assert judge_cap_from_journals(evidence(journal_dir=journal)).status == PASS
    assert judge_cap_from_journals(evidence(journal_dir=tmp_path / "none")).status == UNKNOWN
    assert judge_cap_from_journals(evidence()).status == UNKNOWN


def test_the_sampled_cap_flags_a_sample_over_the_limit() -> None:
    def sample(holders: int) -> Sample:
        return Sample(1.0, "i", A, "redis", 0, holders, holders, 2, holders=holders)

    assert judge_cap_from_permits(evidence(samples=[sample(1), sample(2)])).status == PASS
    over = judge_cap_from_permits(evidence(samples=[sample(1), sample(3)]))
    assert over.status == FAIL
    assert "weaker" in over.note
    assert judge_cap_from_permits(evidence()).status == UNKNOWN


# --- I2 ------------------------------------------------------------------------------------------


def test_visibility_fails_on_a_404_of_an_accepted_task() -> None:
    verdict = judge_visibility(evidence(accepted("t1"), read("t1", B, status=404)))
    assert verdict.status == FAIL
    assert "404 from host:2" in verdict.examples[0]


def test_visibility_needs_reads_on_another_worker_to_pass() -> None:
    assert judge_visibility(evidence(accepted("t1"), read("t1", A))).status == UNKNOWN
    assert judge_visibility(evidence(accepted("t1"), read("t1", B))).status == PASS
    assert judge_visibility(evidence()).status == UNKNOWN


def test_a_404_of_a_stream_breaks_visibility_too() -> None:
    verdict = judge_visibility(evidence(accepted("t1"), stream("t1", B, [], status=404)))
    assert verdict.status == FAIL


# --- I3 ------------------------------------------------------------------------------------------


def test_monotonic_fails_when_a_poller_sees_the_state_go_back() -> None:
    verdict = judge_monotonic(
        evidence(read("t1", A, version=2, state="running"), read("t1", B, version=1))
    )
    assert verdict.status == FAIL
    assert "poll-1" in verdict.examples[0]


def test_monotonic_fails_on_a_stream_that_repeats_or_ends_live() -> None:
    repeated = stream("t1", A, [[1, "queued", 1.0, A], [1, "queued", 1.1, A], [3, "done", 2, A]])
    assert judge_monotonic(evidence(repeated)).status == FAIL
    unfinished = stream("t1", A, [[1, "queued", 1.0, A]], ended=True)
    assert judge_monotonic(evidence(unfinished)).status == FAIL


def test_monotonic_passes_growing_observations_and_is_unknown_without_any() -> None:
    good = evidence(
        read("t1", A), read("t1", B, version=2, state="running"),
        stream("t1", B, [[1, "queued", 1.0, A], [3, "done", 2.0, A]]),
    )  # fmt: skip
    assert judge_monotonic(good).status == PASS
    assert judge_monotonic(evidence()).status == UNKNOWN


# --- I4 ------------------------------------------------------------------------------------------


def test_idempotency_fails_when_one_key_made_two_tasks() -> None:
    verdict = judge_idempotency(evidence(accepted("t1", key="k"), accepted("t2", B, key="k")))
    assert verdict.status == FAIL
    assert "key k: 2 tasks" in verdict.examples[0]


def test_idempotency_fails_when_another_payload_is_not_refused() -> None:
    conflict = {"k": "idem", "key": "k", "same": False, "status": 202, "task": "t9"}
    verdict = judge_idempotency(
        evidence(accepted("t1", key="k"), accepted("t1", key="k"), conflict)
    )
    assert verdict.status == FAIL
    assert "another payload answered 202" in verdict.examples[0]


def test_idempotency_counts_an_unanswered_post_as_may_have_happened() -> None:
    unsure = {"k": "unsure", "t": 1.0, "key": "k", "outcome": "timeout"}
    verdict = judge_idempotency(
        evidence(accepted("t1", key="k"), accepted("t1", B, key="k"), unsure)
    )
    assert verdict.status == PASS
    assert verdict.counts["may_have_happened"] == 1


def test_idempotency_is_unknown_when_no_key_was_contested() -> None:
    assert judge_idempotency(evidence(accepted("t1", key="k"))).status == UNKNOWN


# --- I5 ------------------------------------------------------------------------------------------


def test_liveness_fails_on_a_task_left_running_or_never_found() -> None:
    sweep = {
        "t1": SweepResult("t1", "running", A, [200]),
        "t2": SweepResult("t2", None, None, [404, 404]),
    }
    verdict = judge_liveness(evidence(accepted("t1"), accepted("t2"), sweep=sweep))
    assert verdict.status == FAIL
    assert len(verdict.examples) == 2


def test_liveness_passes_when_every_task_ended() -> None:
    sweep = {"t1": SweepResult("t1", "done", A, [200]), "t2": SweepResult("t2", "failed", B, [200])}
    assert judge_liveness(evidence(accepted("t1"), accepted("t2"), sweep=sweep)).status == PASS
    assert judge_liveness(evidence(sweep={})).status == UNKNOWN


def test_liveness_is_unknown_when_the_sweep_did_not_run_or_did_not_reach_a_task() -> None:
    # An interrupted run: not evidence that the tasks were left live.
    assert judge_liveness(evidence(accepted("t1"))).status == UNKNOWN
    sweep = {"t1": SweepResult("t1", "done", A, [200]), "t2": SweepResult("t2", None, None)}
    verdict = judge_liveness(evidence(accepted("t1"), accepted("t2"), sweep=sweep))
    assert verdict.status == UNKNOWN
    assert verdict.counts["unread"] == 1


# --- I7 ------------------------------------------------------------------------------------------


def test_events_fail_when_a_stream_on_another_worker_misses_the_end() -> None:
    sweep = {"t1": SweepResult("t1", "done", A)}
    cut = stream("t1", B, [[1, "queued", 1.0, A]], ended=False)
    verdict = judge_events(evidence(accepted("t1"), cut, sweep=sweep))
    assert verdict.status == FAIL
    assert "without its terminal event" in verdict.examples[0]


def test_events_fail_when_a_stream_on_the_accepting_worker_misses_a_task_run_elsewhere() -> None:
    # The stream saw only the queued snapshot (naming the accepting worker A); B ran the task.
    sweep = {"t1": SweepResult("t1", "done", B, [200])}
    cut = stream("t1", A, [[1, "queued", 1.0, A]], ended=False)
    assert judge_events(evidence(accepted("t1"), cut, sweep=sweep)).status == FAIL


def test_a_stream_still_open_when_locust_stopped_is_no_evidence() -> None:
    sweep = {"t1": SweepResult("t1", "done", A, [200])}
    stopped = {**stream("t1", B, [[1, "queued", 1.0, A]], ended=False), "outcome": "stopped"}
    verdict = judge_events(evidence(accepted("t1"), stopped, sweep=sweep))
    assert verdict.status == UNKNOWN
    assert verdict.counts["stopped"] == 1


def test_events_pass_only_across_workers() -> None:
    sweep = {"t1": SweepResult("t1", "done", A)}
    events = [[1, "queued", 1.0, A], [3, "done", 2.0, A]]
    assert judge_events(evidence(stream("t1", B, events), sweep=sweep)).status == PASS
    assert judge_events(evidence(stream("t1", A, events), sweep=sweep)).status == UNKNOWN


# --- service levels and the exit code -----------------------------------------------------------


def req(name: str, ms: float, status: int | None = 200, outcome: str = "ok") -> dict[str, Any]:
    return {"k": "req", "t": 1.0, "name": name, "ms": ms, "status": status, "outcome": outcome}


def test_a_5xx_breaches_the_error_budget() -> None:
    checks = judge_slo(evidence(req("POST /api/tts", 5, 500, "unexpected")), load_slo())
    (server_errors,) = [c for c in checks if c.name == "server_errors"]
    assert server_errors.held is False


def test_latency_without_calls_is_not_judged() -> None:
    checks = judge_slo(evidence(), load_slo())
    assert all(c.held is None for c in checks if c.kind == "latency")


def test_percentile_is_nearest_rank_and_none_without_values() -> None:
    assert percentile([], 99) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([float(n) for n in range(1, 101)], 99) == 99.0


def test_a_bad_slo_file_is_refused_with_its_name(tmp_path: Path) -> None:
    bad = tmp_path / "slo.toml"
    bad.write_text("[errors]\n")
    with pytest.raises(ValueError, match=r"slo\.toml.*latency_p99_ms"):
        load_slo(bad)


def check(kind: str, held: bool | None) -> Check:
    return Check("c", kind, 1.0, 1.0, held)


@pytest.mark.parametrize(
    ("statuses", "checks", "trouble", "expected"),
    [
        ([PASS], [check("latency", True)], [], EXIT_OK),
        ([FAIL], [check("errors", False)], ["x"], EXIT_INVARIANT),
        ([PASS], [check("errors", False), check("generator", False)], [], EXIT_SLO),
        ([PASS], [check("latency", False), check("generator", False)], [], EXIT_UNKNOWN),
        ([UNKNOWN], [check("latency", True)], [], EXIT_UNKNOWN),
        ([PASS], [check("latency", True)], ["interrupted"], EXIT_UNKNOWN),
        ([PASS], [check("latency", False)], [], EXIT_SLO),
        ([PASS], [check("latency", True), check("generator", None)], [], EXIT_UNKNOWN),
    ],
)
def test_the_exit_code_ranks_broken_invariants_first_and_unknown_above_latency(
    statuses: list[str], checks: list[Check], trouble: list[str], expected: int
) -> None:
    from loadtests.verdicts import Verdict  # noqa: PLC0415

    verdicts = [Verdict("I1", "cap", status, "r", "m", "l") for status in statuses]
    assert exit_code(verdicts, checks, trouble) == expected


def test_records_survive_a_torn_last_line(tmp_path: Path) -> None:
    (tmp_path / "records-1.jsonl").write_text('{"k":"req","t":2}\n{"k":"lag","t":1}\n{"k":"re')
    assert [r["k"] for r in read_records(tmp_path)] == ["lag", "req"]


def test_a_resumed_stream_does_not_count_towards_the_time_to_first_event() -> None:
    fresh = stream("t1", A, [[1, "queued", 2.1, A, None]])
    resumed = {**stream("t1", A, [[3, "done", 9.0, A, None]], obs="s2"), "resumed_from": "1"}
    first, _ = sse_timings(evidence(fresh, resumed))
    assert first == [pytest.approx(100.0)]


@pytest.mark.parametrize(
    "url", ["https://tts.example:443", "http://tts.example", "tts.example:80", "http://h:1/x"]
)
def test_a_target_the_client_cannot_reach_is_refused_up_front(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from loadtests.runner import parse_args  # noqa: PLC0415

    with pytest.raises(SystemExit):
        parse_args(["--target", url])
    assert "http://HOST:PORT" in capsys.readouterr().err


def test_a_stream_resumed_with_last_event_id_must_not_repeat_and_must_reach_its_end() -> None:
    first = {**stream("t1", A, [[1, "queued", 2.1, A, None]], ended=False), "left_early": True}
    rest = {**stream("t1", B, [[3, "done", 2.9, A, 2.8]]), "resumed_from": "1"}
    verdict = judge_monotonic(evidence(first, rest))
    assert verdict.status == PASS
    assert (verdict.counts["resumed_streams"], verdict.counts["resumed_to_the_end"]) == (1, 1)
    repeated = {**rest, "events": [[1, "queued", 2.5, A, None], [3, "done", 2.9, A, 2.8]]}
    assert judge_monotonic(evidence(first, repeated)).status == FAIL  # version 1 twice
    endless = {**rest, "events": [[2, "running", 2.5, A, None]]}  # ended, but not at the end
    assert judge_monotonic(evidence(first, endless)).status == FAIL


def test_a_stream_resumed_after_its_end_is_a_204_that_completes_it() -> None:
    # The first part saw the terminal event; the resumed request answers 204 (nothing left).
    first = {**stream("t1", A, [[3, "done", 2.1, A, 2.0]], ended=False), "left_early": True}
    rest = {**stream("t1", B, [], 204), "resumed_from": "3", "outcome": "ok"}
    verdict = judge_monotonic(evidence(first, rest))
    assert verdict.status == PASS
    assert (verdict.counts["resumed_streams"], verdict.counts["resumed_to_the_end"]) == (1, 1)
