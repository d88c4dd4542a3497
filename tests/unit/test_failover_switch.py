"""The Failover's switching logic with a probe the test controls: trip once, probe until Redis
answers, write back outside the lock and finish under it, abort on a failure, log each switch
once. (tests/integration/test_failover.py runs it against a real Redis.)"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from taskmon.failover import Failover
from taskmon.ports import BackendRefused, BackendUnavailable
from tests.support.timing import wait_for


class Redis:
    def __init__(self) -> None:
        self.up = False
        self.probes = 0
        self.lost = False

    def probe(self) -> None:
        self.probes += 1
        if not self.up:
            raise BackendUnavailable("refused")

    def store_lost(self) -> bool:
        lost, self.lost = self.lost, False
        return lost


class Participant:
    def __init__(self, failover: Failover) -> None:
        self.failover = failover
        self.calls: list[tuple[str, bool]] = []
        self.fail_promote = 0
        self.refuse_write_back = 0

    def on_degrade(self) -> None:
        self.calls.append(("degrade", self._locked()))

    def write_back(self, *, store_lost: bool) -> int:
        self.calls.append((f"write_back lost={store_lost}", self._locked()))
        if self.refuse_write_back:
            self.refuse_write_back -= 1
            raise BackendRefused("NOPERM User taskmon has no permissions to run the 'del' command")
        return 2

    def on_promote(self, *, store_lost: bool) -> int:
        self.calls.append(("promote", self._locked()))
        if self.fail_promote:
            self.fail_promote -= 1
            raise BackendUnavailable("gone again")
        return 1

    def refresh(self) -> None:
        self.calls.append(("refresh", self._locked()))

    def _locked(self) -> bool:
        # RLock: owned by this thread when a non-blocking acquire from another thread fails.
        taken: list[bool] = []

        def try_it() -> None:
            got = self.failover.lock.acquire(blocking=False)
            taken.append(got)
            if got:
                self.failover.lock.release()

        probe = threading.Thread(target=try_it)
        probe.start()
        probe.join()
        return not taken[0]


@pytest.fixture
def rig() -> Iterator[tuple[Failover, Redis, Participant]]:
    redis = Redis()
    failover = Failover(
        target="redis://x", policy="partition", probe=redis.probe, store_lost=redis.store_lost,
        healthy_interval_s=0.05, min_backoff_s=0.01, max_backoff_s=0.04, settle_s=0.5,
    )  # fmt: skip
    participant = Participant(failover)
    failover.join(participant)
    failover.start()
    yield failover, redis, participant
    failover.close()


def test_trip_degrades_once_then_promotes_when_redis_answers(
    rig: tuple[Failover, Redis, Participant], caplog: pytest.LogCaptureFixture
) -> None:
    failover, redis, participant = rig
    with caplog.at_level(logging.WARNING, logger="taskmon.failover"):
        failover.trip(BackendUnavailable("refused"))
        failover.trip(BackendUnavailable("refused again"))
        assert failover.degraded
        wait_for(lambda: redis.probes >= 3, message="probing while Redis is away")
        assert not failover.wait_promoted(0.01)
        redis.up = True
        assert failover.wait_promoted(5)
        # The line is written just after the flip that wait_promoted sees.
        wait_for(lambda: len([r for r in caplog.records if "answers again" in r.getMessage()]))
    assert failover.outages == 1
    assert failover.settling() > 0, "a settling window follows the re-promotion"
    steps = [c for c in participant.calls if c[0] != "refresh"]
    assert steps == [("degrade", True), ("write_back lost=False", False), ("promote", True)]
    lines = [r.getMessage() for r in caplog.records if r.name == "taskmon.failover.switch"]
    assert len(lines) == 2, lines
    assert "stopped answering" in lines[0]
    assert "3 task(s) and permit(s) written back" in lines[1]


def test_a_failed_promotion_keeps_the_worker_degraded_and_probing(
    rig: tuple[Failover, Redis, Participant],
) -> None:
    failover, redis, participant = rig
    participant.fail_promote = 2
    failover.trip(BackendUnavailable("refused"))
    redis.up = True
    assert failover.wait_promoted(5)
    assert [c[0] for c in participant.calls].count("promote") == 3


def test_a_write_back_refused_by_the_acl_keeps_probing_without_a_traceback_each_time(
    rig: tuple[Failover, Redis, Participant], caplog: pytest.LogCaptureFixture
) -> None:
    # The adapter already said once, as an ERROR, what to grant; each probe meeting the same
    # refusal must not add a traceback (it read as a bug, every probe interval).
    failover, redis, participant = rig
    participant.refuse_write_back = 3
    with caplog.at_level(logging.DEBUG, logger="taskmon.failover"):
        failover.trip(BackendUnavailable("refused"))
        redis.up = True
        assert failover.wait_promoted(5)
    assert [c[0] for c in participant.calls].count("write_back lost=False") == 4
    assert [c[0] for c in participant.calls].count("promote") == 1
    switch = [r for r in caplog.records if r.name == "taskmon.failover.switch"]
    assert not [r for r in switch if r.exc_info], [r.getMessage() for r in switch]
    refused = [r for r in switch if "refused by Redis' ACL" in r.getMessage()]
    assert len(refused) == 3
    assert {r.levelno for r in refused} == {logging.DEBUG}


def test_a_trip_wakes_whoever_waits_out_the_settling_window() -> None:
    redis = Redis()
    redis.up = True
    failover = Failover(
        target="redis://x", policy="partition", probe=redis.probe, store_lost=redis.store_lost,
        healthy_interval_s=60, min_backoff_s=0.01, max_backoff_s=0.04, settle_s=60,
    )  # fmt: skip
    failover.start()
    try:
        failover.trip(BackendUnavailable("refused"))
        assert failover.wait_promoted(5)
        assert failover.settling() > 30
        waiter = threading.Thread(target=failover.wait_settled, args=(60,), daemon=True)
        waiter.start()
        redis.up = False  # it stays degraded: no re-promotion wakes the waiter instead
        failover.trip(BackendUnavailable("refused again"))
        waiter.join(timeout=10)  # a minute without the wake-up
        assert not waiter.is_alive(), "the waiter still waits out a window the trip ended"
    finally:
        failover.close()


def test_a_store_that_lost_its_data_while_healthy_gets_everything_back(
    rig: tuple[Failover, Redis, Participant],
) -> None:
    failover, redis, participant = rig
    redis.up, redis.lost = True, True
    wait_for(lambda: ("write_back lost=True", False) in participant.calls, message="rewrite")
    assert not failover.degraded
    wait_for(lambda: ("promote", True) in participant.calls, message="re-registered under lock")


def test_a_healthy_check_that_fails_trips_it(rig: tuple[Failover, Redis, Participant]) -> None:
    failover, _, participant = rig

    def broken() -> None:
        raise BackendUnavailable("refused")

    participant.refresh = broken  # type: ignore[method-assign]
    wait_for(lambda: failover.degraded, message="degraded by the healthy check")
