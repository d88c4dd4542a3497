"""The rehearsal's judges on evidence built by hand: each flags the run that breaks its rule,
passes the one that keeps it, and judges I1-I4 on the both-Redis hold only."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from loadtests.evidence import Evidence, ProbeFailure, Sample, SweepResult
from loadtests.rehearsal_figures import cap_figures, requests_by_phase
from loadtests.rehearsal_judge import (
    judge_backend_follows,
    judge_cap_in,
    judge_no_failed_request,
    judge_rehearsal,
    judge_tasks_end,
    windowed,
)
from loadtests.rehearsal_timeline import MEMORY, REDIS, Generation, Phase, Timeline, pid_of
from loadtests.verdicts import FAIL, PASS, UNKNOWN

CANARY_URL, SECOND_URL = "http://127.0.0.1:8001", "http://127.0.0.1:8002"
# Canary: pids 11, 12 in memory until t=10, then 21, 22 in Redis. Second: 31, 32 in memory
# until t=20, then 41, 42 in Redis (alive at the end). Both in Redis mode from t=20 to t=30.
CANARY_MEM, CANARY_REDIS, SECOND_MEM, SECOND_REDIS = "h:11", "h:21", "h:31", "h:41"


def timeline() -> Timeline:
    return Timeline(
        phases=[
            Phase("both memory", 0, 10, (MEMORY, MEMORY)),
            Phase("mixed: canary redis, second memory", 10, 20, (REDIS, MEMORY)),
            Phase("both redis", 20, 30, (REDIS, REDIS)),
        ],
        generations=[
            Generation(0, MEMORY, frozenset({11, 12}), 0, gone=10),
            Generation(1, MEMORY, frozenset({31, 32}), 0, gone=20),
            Generation(0, REDIS, frozenset({21, 22}), 10),
            Generation(1, REDIS, frozenset({41, 42}), 20),
        ],
        urls=[CANARY_URL, SECOND_URL],
    )


def accepted(task: str, worker: str, t: float, key: str | None = None) -> dict[str, Any]:
    return {"k": "accepted", "t": t, "task": task, "worker": worker, "status": 202, "key": key}


def read(task: str, worker: str, t: float, status: int = 200, **body: Any) -> dict[str, Any]:
    return {
        "k": "read", "t": t, "obs": body.pop("obs", f"poll-{task}"), "task": task,
        "worker": worker, "status": status, "version": body.get("version"),
        "state": body.get("state"),
    }  # fmt: skip


def req(t: float, status: int | None, outcome: str = "ok") -> dict[str, Any]:
    return {"k": "req", "t": t, "name": "GET /x", "ms": 5.0, "status": status, "outcome": outcome}


def test_worker_ids_name_a_generation() -> None:
    line = timeline()
    assert pid_of("vm:1234") == 1234
    assert pid_of("?") is None
    assert pid_of(None) is None
    assert line.backend_of(CANARY_REDIS) == REDIS
    assert line.backend_of("h:99") is None
    assert line.instance_of_pid(42) == 1
    assert line.both_redis() is line.phases[2]
    assert line.phase_at(15.0) is line.phases[1]
    assert line.phase_at(31.0) is None


def test_a_server_error_or_a_cut_call_in_any_phase_fails_r1() -> None:
    line = timeline()
    clean = Evidence(records=[req(1, 200), req(12, 404), req(25, 429)])
    assert judge_no_failed_request(clean, line).status == PASS
    assert judge_no_failed_request(Evidence(), line).status == UNKNOWN
    for bad in (req(12, 502, "unexpected"), req(12, None, "connection"), req(12, None, "timeout")):
        verdict = judge_no_failed_request(Evidence(records=[req(1, 200), bad]), line)
        assert verdict.status == FAIL, bad
        assert "mixed" in verdict.examples[0]
    stream_cut = {"k": "stream", "t": 25, "status": 200, "outcome": "connection", "events": []}
    assert judge_no_failed_request(Evidence(records=[stream_cut]), line).status == FAIL
    stopped = {"k": "stream", "t": 25, "status": 200, "outcome": "stopped", "events": []}
    assert judge_no_failed_request(Evidence(records=[req(1, 200), stopped]), line).status == PASS


def test_failed_calls_are_counted_in_their_phase() -> None:
    evidence = Evidence(
        records=[req(1, 200), req(12, 503, "unexpected"), req(12, 404), req(40, 200)]
    )
    rows = {row["phase"]: row for row in requests_by_phase(evidence, timeline())}
    mixed = rows["2. hold: mixed: canary redis, second memory"]
    assert (mixed["requests"], mixed["failed"], mixed["server_errors"], mixed["not_found"]) == (
        2, 1, 1, 1,
    )  # fmt: skip
    assert rows["1. hold: both memory"]["failed"] == 0
    assert rows["wind-down"]["requests"] == 1


def sweep(**states: str | None) -> dict[str, SweepResult]:
    """The sweep's findings: a state read (200), or None for a task it got 404 for."""
    return {
        task: SweepResult(task, state, None, [200 if state else 404])
        for task, state in states.items()
    }


def test_r2_redis_tasks_must_end_in_redis_and_live_memory_ones_on_their_instance(
    tmp_path: Path,
) -> None:
    line = timeline()
    records = [
        accepted("r1", CANARY_REDIS, 11),
        accepted("m-live", "h:11", 1),  # canary memory: gone at 10, seen done meanwhile
        read("m-live", "h:11", 2, state="done"),
        accepted("m-gone", SECOND_MEM, 19),  # its worker left before anyone read its end
    ]
    unread = Evidence(records=records, sweep=sweep(r1="done"))
    verdict = judge_tasks_end(unread, line)
    assert verdict.status == UNKNOWN, verdict  # m-gone: no read, no journal: its end unknown
    assert verdict.counts["memory_gone_unread"] == 1
    assert verdict.counts["redis_done"] == 1

    ran = Evidence(
        records=records,
        sweep=sweep(r1="done"),
        journal_dir=journal(tmp_path, [(19.1, "start", 31, "m-gone"), (19.5, "end", 31, "m-gone")]),
    )
    verdict = judge_tasks_end(ran, line)
    assert verdict.status == PASS, verdict
    assert verdict.counts["memory_gone_ended_in_journal"] == 1
    assert verdict.counts.get("memory_gone_unread", 0) == 0

    dropped = replace(
        ran, journal_dir=journal(tmp_path / "j2", [(19.6, "abandoned", 31, "m-gone")])
    )
    verdict = judge_tasks_end(dropped, line)
    assert verdict.status == PASS, verdict  # failed at its worker's shutdown, per the journal
    assert verdict.counts["memory_gone_abandoned_in_journal"] == 1

    never_answered = replace(ran, sweep={"r1": SweepResult("r1", None, None, [])})
    assert judge_tasks_end(never_answered, line).status == UNKNOWN  # no answer in the drain

    still_running = replace(ran, sweep=sweep(r1="running"))
    verdict = judge_tasks_end(still_running, line)
    assert verdict.status == FAIL
    assert "r1" in verdict.examples[0]
    assert "in Redis" in verdict.examples[0]
    assert judge_tasks_end(replace(ran, sweep=sweep(r1=None)), line).status == FAIL  # a 404


def test_r2_a_task_forgotten_by_its_own_worker_or_by_redis_fails() -> None:
    line = timeline()
    own = Evidence(
        records=[
            accepted("m", "h:11", 1),
            read("m", "h:11", 2, 404),
            read("m", "h:11", 3, state="done"),
        ],
        sweep={},
    )
    assert judge_tasks_end(own, line).status == FAIL
    # Interrupted before the sweep: the forgetting is still a fact, the rest unknown.
    assert judge_tasks_end(replace(own, sweep=None), line).status == FAIL
    elsewhere = Evidence(
        records=[
            accepted("m", "h:11", 1),
            read("m", "h:12", 2, 404),
            read("m", "h:11", 3, state="done"),
        ],
        sweep={},
    )
    assert judge_tasks_end(elsewhere, line).status == PASS  # memory mode: another worker's 404
    assert judge_tasks_end(replace(elsewhere, sweep=None), line).status == UNKNOWN
    redis_reader = Evidence(
        records=[accepted("r", CANARY_REDIS, 11), read("r", SECOND_REDIS, 22, 404)],
        sweep=sweep(r="done"),
    )
    verdict = judge_tasks_end(redis_reader, line)
    assert verdict.status == FAIL
    assert "forgot" in verdict.examples[0]
    memory_reader = Evidence(
        records=[accepted("r", CANARY_REDIS, 11), read("r", SECOND_MEM, 12, 404)],
        sweep=sweep(r="done"),
    )
    assert judge_tasks_end(memory_reader, line).status == PASS  # the mixed phase's known gap


def sample(t: float, instance: str, worker: str, backend: str) -> Sample:
    return Sample(t, instance, worker, backend, queued=0, running=0, in_use=0, limit=4)


def test_r3_each_worker_reports_its_generations_backend_on_its_own_instance() -> None:
    line = timeline()
    good = [
        sample(1, CANARY_URL, "h:11", MEMORY),
        sample(2, SECOND_URL, SECOND_MEM, MEMORY),
        sample(12, CANARY_URL, CANARY_REDIS, REDIS),
        sample(22, SECOND_URL, SECOND_REDIS, REDIS),
    ]
    assert judge_backend_follows(Evidence(samples=good), line, line.urls).status == PASS
    assert judge_backend_follows(Evidence(), line, line.urls).status == UNKNOWN
    # A generation never sampled: what it reported is not known.
    verdict = judge_backend_follows(Evidence(samples=good[:3]), line, line.urls)
    assert verdict.status == UNKNOWN
    assert "second redis pids [41, 42]" in verdict.note
    # A worker gunicorn forked outside a switch: a worker died.
    line.unplanned.append((15.0, 1, 33))
    assert judge_backend_follows(Evidence(samples=good), line, line.urls).status == FAIL
    line.unplanned.clear()
    for bad in (
        sample(12, CANARY_URL, CANARY_REDIS, MEMORY),  # a Redis worker saying memory
        sample(12, SECOND_URL, CANARY_REDIS, REDIS),  # on the wrong instance
        sample(12, CANARY_URL, "h:77", REDIS),  # a worker no switch made
    ):
        verdict = judge_backend_follows(Evidence(samples=[*good, bad]), line, line.urls)
        assert verdict.status == FAIL, bad


def journal(directory: Path, lines: list[tuple[float, str, int, str]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "journal-h-1.jsonl").open("w", encoding="utf-8") as out:
        for t, event, pid, task in lines:
            entry = {"t": int(t * 1e9), "event": event, "pid": pid, "task": task, "fencing": 1}
            out.write(json.dumps(entry) + "\n")
    return directory


def test_i1_is_judged_inside_the_both_redis_hold_only(tmp_path: Path) -> None:
    line = timeline()
    # Five at once in the mixed hold (not judged), four at most in the both-Redis hold, one
    # of them started before the hold and still running in it.
    lines = [(11 + i * 0.1, "start", 21 if i < 2 else 31, f"m{i}") for i in range(5)]
    lines += [(12, "end", 31, f"m{i}") for i in range(2, 5)]
    lines += [(13, "end", 21, "m1")]
    lines += [(21 + i * 0.1, "start", 41, f"r{i}") for i in range(3)]
    lines += [
        (25, "end", 41, "r0"),
        (25, "end", 41, "r1"),
        (25, "end", 41, "r2"),
        (26, "end", 21, "m0"),
    ]
    evidence = Evidence(journal_dir=journal(tmp_path / "ok", lines), limit=4)
    verdict = judge_cap_in(evidence, line, line.both_redis())
    assert verdict.status == PASS, verdict
    assert verdict.counts["peak"] == 4
    mixed = cap_figures(evidence, line, [line.phases[1]])[0]
    assert mixed["peak"] == 5
    assert mixed["per_instance_peak"] == {"canary": 2, "second": 3}
    assert mixed["seconds_over_limit"] > 0

    over = [
        *lines,
        (22, "start", 42, "r3"),
        (23, "start", 42, "r4"),
        (24, "end", 42, "r3"),
        (24, "end", 42, "r4"),
    ]
    verdict = judge_cap_in(
        Evidence(journal_dir=journal(tmp_path / "over", over), limit=4), line, line.both_redis()
    )
    assert verdict.status == FAIL
    assert verdict.counts["peak"] == 6
    assert judge_cap_in(evidence, line, None).status == UNKNOWN

    # A synthesis whose worker was killed mid-way (no end line) stops counting when its worker
    # is gone (31: gone at 20), instead of running on into the both-Redis hold.
    killed = [*lines, (19, "start", 31, "cut")]  # with it, five would run at 21.2
    verdict = judge_cap_in(
        Evidence(journal_dir=journal(tmp_path / "killed", killed), limit=4), line, line.both_redis()
    )
    assert verdict.status == PASS, verdict
    assert verdict.counts["peak"] == 4


def test_the_window_keeps_redis_tasks_reads_in_the_hold_and_keys_used_only_there() -> None:
    line = timeline()
    records = [
        accepted("m", SECOND_MEM, 15),  # a memory task: 404s on Redis workers are expected
        read("m", SECOND_REDIS, 22, 404),
        accepted("r", CANARY_REDIS, 12),  # a Redis task from the mixed hold, read in the hold
        read("r", SECOND_REDIS, 23, state="done", version=3),
        read("r", SECOND_MEM, 13, 404),  # in the mixed hold: not judged here
        accepted("k-early", CANARY_REDIS, 18, key="early"),  # Redis workers, both: judged
        accepted("k-early", SECOND_REDIS, 21, key="early"),
        accepted("k-mem", SECOND_MEM, 18, key="mixed"),  # a memory worker answered: not judged
        accepted("k-mem-2", SECOND_REDIS, 21, key="mixed"),
        {"k": "unsure", "t": 12, "key": "lost", "outcome": "timeout"},  # unknown who got it
        accepted("k-lost", SECOND_REDIS, 21, key="lost"),
        accepted("k1", CANARY_REDIS, 21, key="in"),
        accepted("k1", SECOND_REDIS, 22, key="in"),
        {"k": "idem", "t": 22.5, "key": "in", "same": False, "status": 422, "task": None,
         "worker": CANARY_REDIS},
    ]  # fmt: skip
    window = windowed(Evidence(records=records, workers=8), line, line.phases[2])
    tasks = {(r["k"], r["task"]) for r in window.records if r.get("task")}
    assert ("read", "m") not in tasks
    assert ("read", "r") in tasks
    assert ("accepted", "k-early") in tasks
    assert ("accepted", "k-mem-2") not in tasks
    assert ("accepted", "k-lost") not in tasks
    verdicts = {
        v.invariant: v
        for v in judge_rehearsal(Evidence(records=records, workers=8), line, line.urls)
    }
    assert verdicts["I2"].status == PASS, verdicts["I2"]
    assert verdicts["I4"].status == PASS, verdicts["I4"]
    assert verdicts["I4"].counts["keys"] == 2
    # Two tasks under a key that only Redis-mode workers answered, in the mixed hold or not.
    split = [*records, accepted("k-early-3", CANARY_REDIS, 19, key="early")]
    verdicts = {
        v.invariant: v for v in judge_rehearsal(Evidence(records=split, workers=8), line, line.urls)
    }
    assert verdicts["I4"].status == FAIL
    # Another payload under a taken key, answered 202 by a Redis-mode worker.
    conflict = {"k": "idem", "t": 23, "key": "in", "same": False, "status": 202, "task": "x",
                "worker": SECOND_REDIS}  # fmt: skip
    verdicts = {
        v.invariant: v
        for v in judge_rehearsal(Evidence(records=[*records, conflict], workers=8), line, line.urls)
    }
    assert verdicts["I4"].status == FAIL

    two_tasks = [*records, accepted("k2", SECOND_REDIS, 23, key="in")]
    verdicts = {
        v.invariant: v
        for v in judge_rehearsal(Evidence(records=two_tasks, workers=8), line, line.urls)
    }
    assert verdicts["I4"].status == FAIL
    lost = [*records, read("r", CANARY_REDIS, 24, 404)]
    verdicts = {
        v.invariant: v for v in judge_rehearsal(Evidence(records=lost, workers=8), line, line.urls)
    }
    assert verdicts["I2"].status == FAIL


def test_without_a_both_redis_hold_i1_to_i4_are_unknown() -> None:
    line = timeline()
    line.phases = line.phases[:2]
    verdicts = {v.invariant: v.status for v in judge_rehearsal(Evidence(), line, line.urls)}
    assert {verdicts[name] for name in ("I1", "I2", "I3", "I4")} == {UNKNOWN}


def test_r1_counts_the_runners_own_probes_and_the_sweep_and_files_a_failure_where_it_ended() -> (
    None
):
    line = timeline()
    calm = Evidence(records=[req(1, 200)])
    assert judge_no_failed_request(calm, line).status == PASS
    for failure in ("connection", "timeout", "server error"):
        probed = replace(calm, probe_failures=[ProbeFailure(15, CANARY_URL, failure, "x", 15.5)])
        assert judge_no_failed_request(probed, line).status == FAIL, failure
    swept = replace(calm, sweep={"t": SweepResult("t", "done", None, [503, 200])})
    assert judge_no_failed_request(swept, line).status == FAIL
    # Opened in the first hold, cut at 10.5 by the switch that began at 10: the switch's.
    cut = {"k": "stream", "t": 8.0, "t_end": 10.5, "status": 200, "outcome": "connection",
           "events": []}  # fmt: skip
    slow = {**req(9.0, None, "timeout"), "ms": 2500.0}  # gave up at 11.5
    rows = {
        row["phase"]: row
        for row in requests_by_phase(Evidence(records=[cut, slow, req(9.5, 200)]), line)
    }
    assert rows["1. hold: both memory"]["failed"] == 0
    assert rows["1. hold: both memory"]["requests"] == 1
    assert rows["2. hold: mixed: canary redis, second memory"]["failed"] == 2
