"""The chaos checkers on evidence written by hand: each passes what keeps its promise and
fails what breaks it (the runs in tests/e2e/test_chaos.py show the same on real stacks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chaos.concurrency import partition_bound, series
from chaos.evidence import FAIL, PASS, UNKNOWN, ChaosEvidence, TaskEnd
from chaos.faults import Window
from chaos.judge import (
    judge_failed_calls,
    judge_tasks,
    judge_terminal_kept,
    judge_toxics_reached,
    toxicity_kept,
)
from chaos.probes import Probe, Step
from chaos.retries import judge_keys, judge_no_stray_synthesis
from chaos.scenarios import SCENARIOS
from chaos.switching import judge_cap, judge_detect, judge_repromote

NS = 1_000_000_000
WALL0 = 1_800_000_000.0  # the wall clock at monotonic 100 s


def journal(directory: Path, lines: list[tuple[float, str, int, str]]) -> Path:
    """(monotonic s, start|end, pid, task) lines, one journal file per pid."""
    directory.mkdir(parents=True, exist_ok=True)
    for at, event, pid, task in lines:
        entry = {"t": int(at * NS), "event": event, "pid": pid, "task": task, "fencing": 1}
        with (directory / f"journal-{pid}.jsonl").open("a") as out:
            out.write(json.dumps(entry) + "\n")
    return directory


def evidence(tmp_path: Path, scenario: str = "redis-down", policy: str = "partition",
             **kwargs: object) -> ChaosEvidence:  # fmt: skip
    found = ChaosEvidence(
        scenario=SCENARIOS[scenario], policy=policy, limit=4, workers=4, lease_ttl_s=2.0,
        journal_dir=tmp_path / "journal", load_start=90.0, load_end=130.0,
    )  # fmt: skip
    window = Window("proxy-down", 100.0, WALL0, 110.0, WALL0 + 10)
    found.windows = [window]
    found.pids = {0: [11, 12, 13, 14]}
    for name, value in kwargs.items():
        setattr(found, name, value)
    return found


def log_line(wall: float, pid: int, what: str) -> str:
    from datetime import datetime  # noqa: PLC0415

    stamp = datetime.fromtimestamp(wall).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
    return f"{stamp} [{pid}] WARNING taskmon.failover.switch: Redis at redis://x:1/0 {what}\n"


def switches_log(down_after: float, up_after: float) -> str:
    text = ""
    for pid in (11, 12, 13, 14):
        text += log_line(WALL0 + down_after, pid, "stopped answering (refused): ...")
        text += log_line(WALL0 + 10 + up_after, pid, "answers again: back")
    return text


def test_partition_bound_is_the_shares_or_what_was_carried() -> None:
    assert partition_bound(4, 4, [0, 0, 0, 0]) == 4
    assert partition_bound(4, 4, [3, 1]) == 6  # 3 + 1 + 1 + 1
    assert partition_bound(5, 4, [2]) == 6, "the spare share on another rank: 2 + 2 + 1 + 1"
    assert partition_bound(4, 4, [2], among=2) == 3, "two cut workers of four"


def test_series_counts_a_dead_workers_unended_synthesis_until_its_death(tmp_path: Path) -> None:
    directory = journal(tmp_path / "j", [(1.0, "start", 7, "a"), (2.0, "start", 8, "b"),
                                         (3.0, "end", 8, "b"), (9.0, "start", 8, "c"),
                                         (9.5, "end", 8, "c")])  # fmt: skip
    assert series(directory).peak(5.0, 6.0) == 1, "unended: running to the last line"
    dead = series(directory, {7: 4.0})
    assert dead.peak(5.0, 6.0) == 0
    assert dead.seconds_above(1, 0.0, 10.0) == pytest.approx(1.0)


def test_cap_passes_within_the_bound_and_fails_above_it(tmp_path: Path) -> None:
    lines = [(95.0 + i * 0.01, "start", 11 + i, f"t{i}") for i in range(4)]
    lines += [(96.0 + i * 0.01, "end", 11 + i, f"t{i}") for i in range(4)]
    journal(tmp_path / "journal", lines)
    kept = evidence(tmp_path, logs={0: switches_log(0.1, 0.5)})
    assert judge_cap(kept).status == PASS
    # Five at once after the fault has settled: over the limit, outside any allowance.
    late = [(120.0 + i * 0.01, "start", 11 + i % 4, f"late{i}") for i in range(5)]
    journal(tmp_path / "journal", [*late, *[(125.0, "end", p, t) for _, _, p, t in late]])
    broken = judge_cap(evidence(tmp_path, logs={0: switches_log(0.1, 0.5)}))
    assert broken.status == FAIL
    assert "after the fault" in broken.where


def test_detect_and_repromote_are_judged_by_the_slowest_workers_own_log(tmp_path: Path) -> None:
    fast = evidence(tmp_path, logs={0: switches_log(0.2, 0.8)})
    assert judge_detect(fast).status == PASS
    assert judge_repromote(fast).status == PASS
    slow = evidence(tmp_path, logs={0: switches_log(1.6, 6.0)})
    assert judge_detect(slow).status == FAIL
    assert judge_repromote(slow).status == FAIL
    silent = evidence(tmp_path, logs={0: ""})
    assert judge_detect(silent).status == FAIL, "a worker that never degrades fails"


def test_failed_calls_count_5xx_and_drops_but_not_degraded_answers(tmp_path: Path) -> None:
    calls = [{"k": "req", "t": 101.0, "ms": 5, "name": "GET s", "status": s, "outcome": "ok"}
             for s in (200, 421, 429)]  # fmt: skip
    assert judge_failed_calls(evidence(tmp_path, records=calls)).status == PASS
    broken = [*calls, {"k": "req", "t": 102.0, "ms": 5, "name": "POST", "status": 503,
                       "outcome": "unexpected"}]  # fmt: skip
    assert judge_failed_calls(evidence(tmp_path, records=broken)).status == FAIL
    dropped = [*calls, {"k": "stream", "t": 102.0, "t_end": 103.0, "status": None,
                        "outcome": "connection"}]  # fmt: skip
    assert judge_failed_calls(evidence(tmp_path, records=dropped)).status == FAIL


def test_a_task_failed_abandoned_is_lost_unless_the_fault_killed_its_worker(
    tmp_path: Path,
) -> None:
    records = [{"k": "accepted", "task": "t1", "worker": "h:11"}]
    endings = {"t1": TaskEnd("failed", "abandoned", {0: "failed"})}
    partitioned = judge_tasks(evidence(tmp_path, records=records, endings=endings))
    assert partitioned.status == FAIL
    killed = judge_tasks(evidence(tmp_path, "worker-killed", records=records, endings=endings))
    assert killed.status == PASS
    unread = {"t1": TaskEnd(None, None, {0: "404"})}
    assert judge_tasks(evidence(tmp_path, records=records, endings=unread)).status == FAIL


def test_a_task_a_client_saw_done_must_end_done(tmp_path: Path) -> None:
    seen = [{"k": "read", "task": "t1", "state": "done"}]
    flipped = {"t1": TaskEnd("failed", "abandoned", {0: "failed"})}
    assert judge_terminal_kept(evidence(tmp_path, records=seen, endings=flipped)).status == FAIL
    corrected = [{"k": "read", "task": "t1", "state": "failed", "error": "abandoned"}]
    done = {"t1": TaskEnd("done", None, {0: "done"})}
    result = judge_terminal_kept(evidence(tmp_path, records=corrected, endings=done))
    assert result.status == PASS
    assert result.figures["corrected"] == 1
    other = [{"k": "stream", "task": "t1", "events": [[3, "failed", 1.0, "h:1", 2.0, "boom"]]}]
    assert judge_terminal_kept(evidence(tmp_path, records=other, endings=done)).status == FAIL


def test_the_kill_excuses_only_connections_the_dead_worker_had_open(tmp_path: Path) -> None:
    death = 100.0

    def run(*records: dict[str, object]) -> str:
        found = evidence(tmp_path, "worker-killed", records=list(records), victim=11,
                         deaths={11: death})  # fmt: skip
        return judge_failed_calls(found).status

    ok = {"k": "req", "t": 99.0, "ms": 5, "name": "GET s", "status": 200, "outcome": "ok"}
    open_at_death = {"k": "req", "t": 99.8, "ms": 400, "name": "GET s", "status": None,
                     "outcome": "connection"}  # fmt: skip
    assert run(ok, open_at_death) == PASS
    before = {**open_at_death, "t": 91.0, "ms": 5}  # failed long before the kill
    assert run(ok, before) == FAIL
    answered = {**open_at_death, "status": 502, "outcome": "unexpected"}
    assert run(ok, answered) == FAIL, "a 5xx is an answer: never excused"


def attempt(t: float, **fields: object) -> dict[str, object]:
    base = {"k": "attempt", "t": t, "t_end": t + 0.01, "key": "k1", "front": True,
            "status": 202, "outcome": "answered", "injected": None, "task": None}  # fmt: skip
    return base | fields


def held(hits: int) -> dict[str, object]:
    """A fault window's toxic counts: a slow_headers toxic that held `hits` answers."""
    slow = {"type": "slow_headers", "connections_met": 20, "connections_hit": hits,
            "toxicity": 0.2}  # fmt: skip
    return {"toxics": {"service_1/http-faults_2": slow}}


def test_only_the_fault_proxys_own_failures_are_excused(tmp_path: Path) -> None:
    def run(*records: dict[str, object], holds: int = 1) -> str:
        found = evidence(tmp_path, "http-faults", records=list(records))
        found.windows[0].details.update(held(holds))
        return judge_failed_calls(found).status

    assert run(attempt(101.0, status=502, injected="http-faults_1", replaced=202)) == PASS
    assert run(attempt(101.0, status=503, injected="http-faults_0")) == PASS, "never reached it"
    hidden = attempt(101.0, status=502, injected="http-faults_1", replaced=500)
    assert run(hidden) == FAIL, "the service's own 500 behind the injected answer"
    timed_out = attempt(101.0, status=None, outcome="timeout")
    assert run(timed_out) == PASS, "held in the window"
    assert run(timed_out, holds=0) == FAIL, "no toxic held anything"
    assert run(timed_out, {**timed_out, "t": 102.0}) == FAIL, "two timeouts, one answer held"
    assert run(attempt(99.5, t_end=102.0, status=None, outcome="timeout")) == PASS, "overlap"
    assert run(attempt(115.0, status=None, outcome="timeout")) == FAIL, "after the window"
    dropped = attempt(101.0, status=None, outcome="connection")
    assert run(dropped) == FAIL, "the proxy's errors are answers: a drop is the service's"
    assert run(attempt(101.0, status=500, outcome="answered")) == FAIL, "the service's own 5xx"
    direct = attempt(101.0, front=False, status=None, outcome="timeout")
    assert run(direct) == FAIL, "a try on an instance directly has no proxy to blame"
    both = [attempt(101.0, status=503, injected="x"), hidden]
    figures = judge_failed_calls(evidence(tmp_path, "http-faults", records=both)).figures
    assert figures["five_xx"] == 1, "the hidden 500 only"
    assert figures["proxy_made"] == 1


def test_a_key_must_end_accepted_with_one_task(tmp_path: Path) -> None:
    def keyed(**fields: object) -> dict[str, object]:
        return {"k": "keyed", "t": 101.0, "key": "k1", "attempts": 2, "tasks": ["t1"],
                "accepted": "t1"} | fields  # fmt: skip

    def run(*records: dict[str, object]) -> str:
        return judge_keys(evidence(tmp_path, "http-faults", records=list(records))).status

    assert run(keyed()) == PASS
    assert run(keyed(tasks=["t1", "t2"])) == FAIL, "two tasks under one key (the replay's)"
    assert run(keyed(accepted=None, tasks=[])) == FAIL, "given up"
    assert run(keyed(accepted=None, tasks=[], refused=400)) == FAIL, "refused"
    assert run(keyed(attempts=1)) == UNKNOWN, "no retry: nothing was proven"
    assert run(keyed(), attempt(101.0, key="k2")) == UNKNOWN, "a key tried, never concluded"


def test_a_synthesis_no_client_was_given_is_a_retry_run_twice(tmp_path: Path) -> None:
    lines = [(101.0, "start", 11, "t1"), (101.5, "end", 11, "t1"),
             (102.0, "start", 12, "t2"), (102.5, "end", 12, "t2")]  # fmt: skip
    journal(tmp_path / "journal", lines)
    given = [{"k": "accepted", "task": "t1"}, attempt(101.0, task="t2", status=200)]
    found = evidence(tmp_path, "http-faults", records=given)
    assert judge_no_stray_synthesis(found).status == PASS
    lost_answer = evidence(tmp_path, "http-faults", records=given[:1])
    result = judge_no_stray_synthesis(lost_answer)
    assert result.status == FAIL
    assert "t2" in result.where
    excused = evidence(tmp_path, "http-faults", records=[*given[:1], {"k": "unsure", "t": 1.0}])
    assert judge_no_stray_synthesis(excused).status == PASS, "an unanswered submission"
    later = evidence(tmp_path, "http-faults", records=[*given[:1], {"k": "unsure", "t": 103.0}])
    assert judge_no_stray_synthesis(later).status == FAIL, "sent after the synthesis began"
    probed = Step("during", 101.0, [Probe("a submission is answered", True, "202", ["t2"])])
    by_probe = evidence(tmp_path, "http-faults", records=given[:1], steps=[probed])
    assert judge_no_stray_synthesis(by_probe).status == PASS, "the steady-state probe's task"


def test_a_toxic_must_keep_its_toxicity() -> None:
    def counts(met: int, hit: int, toxicity: float) -> dict[str, object]:
        return {"connections_met": met, "connections_hit": hit, "toxicity": toxicity}

    assert toxicity_kept(counts(10, 10, 1.0))
    assert not toxicity_kept(counts(10, 9, 1.0)), "a miss at toxicity 1.0"
    assert not toxicity_kept(counts(0, 0, 1.0)), "idle"
    assert toxicity_kept(counts(100, 31, 0.3))
    assert not toxicity_kept(counts(100, 95, 0.3)), "toxicity ignored"
    assert not toxicity_kept(counts(100, 0, 0.3)), "never hit in 100"
    assert toxicity_kept(counts(5, 0, 0.2)), "nothing in 5 at 0.2 is chance"
    assert not toxicity_kept(counts(20, 20, 0.2)), "every one at 0.2: applied as 1.0"
    assert toxicity_kept(counts(20, 0, 0.0))
    assert not toxicity_kept(counts(20, 1, 0.0)), "toxicity 0 has no effect at all"
    assert not toxicity_kept(counts(0, 0, 0.3)), "met nothing: traffic never went through"


def test_no_client_sees_more_injected_answers_than_the_toxic_made(tmp_path: Path) -> None:
    made = {"connections_met": 10, "connections_hit": 1, "toxicity": 0.3, "type": "http_error"}
    found = evidence(tmp_path, "http-faults", records=[
        attempt(101.0, status=503, injected="http-faults_0") for _ in range(2)])  # fmt: skip
    found.windows[0].details["toxics"] = {"service_1/http-faults_0": made}
    assert judge_toxics_reached(found).status == FAIL
    made["connections_hit"] = 2
    assert judge_toxics_reached(found).status == PASS
