"""The benchmark's pure logic: what runs for whom, the fairness index, the targets' verdicts."""

from __future__ import annotations

import math

import pytest
from benchmarks.run import targets
from benchmarks.semaphore.bench import combos
from benchmarks.semaphore.params import FAIR, SEM_NC
from benchmarks.semaphore.stats import jain


def test_jain_is_one_when_all_got_the_same_and_one_over_n_when_one_got_all() -> None:
    assert jain([5, 5, 5, 5]) == pytest.approx(1.0)
    assert jain([20, 0, 0, 0]) == pytest.approx(0.25)
    assert 0.25 < jain([10, 5, 5, 0]) < 1.0
    assert math.isnan(jain([0, 0]))


def test_mutexes_sit_out_the_measurements_that_need_a_limit_above_one() -> None:
    found = combos(["taskmon", "redis-py-lock", "redis-rate-limiters"])
    for name in (SEM_NC, FAIR):
        assert (name, "redis-py-lock") not in found
        assert (name, "taskmon") in found
        assert (name, "redis-rate-limiters") in found
    assert found[:2] == [("evalsha_1", None), ("evalsha_n", None)], "baselines first"


def _semaphore(of_two: float, ours: float, peer: float, jain_index: float) -> dict[str, object]:
    row = {"sem_1_of_two_rtt": of_two, "sem_1_ops_s": ours, "handoff_p50_ms": 0.8,
           "handoff_p99_ms": 1.2, "contended_vs_uncontended": 0.4, "jain": jain_index,
           "min_grants": 3}  # fmt: skip
    other = {"sem_1_ops_s": peer, "handoff_p50_ms": 0.9}
    return {
        "peers": {"taskmon": row, "redis-py-lock": other},
        "summary": {"sem_nc.taskmon.attempts_per_grant": {"median": 1.0}},
    }


def test_a_target_is_met_or_missed_by_its_figure_and_unknown_without_one() -> None:
    verdicts = {t["target"]: t["met"] for t in targets({"semaphore": _semaphore(0.95, 5, 4, 1)})}
    assert verdicts["uncontended pair, 1 client, of two EVALSHA round trips"] is True
    assert verdicts["uncontended pairs/s, 1 client, ÷ the best peer's"] is True
    assert verdicts["contended (8 processes, limit 2) ÷ uncontended (limit 8)"] is False
    assert verdicts["handoff p50 ÷ the best peer's"] is True
    missed = {t["target"]: t["met"] for t in targets({"semaphore": _semaphore(0.7, 3, 4, 0.9)})}
    assert missed["uncontended pair, 1 client, of two EVALSHA round trips"] is False
    assert missed["uncontended pairs/s, 1 client, ÷ the best peer's"] is False
    assert missed["fairness, Jain's index (16 clients, 4 permits)"] is False
    nothing = targets({})
    assert nothing == [], "no suite run, no verdict claimed"
