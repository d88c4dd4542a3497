"""The heartbeat-and-reap duty judges only after a whole TTL of contact with Redis: heartbeats
that lapsed while Redis (or this worker's way to it) was away are not taken for deaths."""

from __future__ import annotations

import pytest

from taskmon.ports import BackendUnavailable
from taskmon.redis import workers
from taskmon.redis.workers import Maintenance


class FakeTime:
    """Stands in for the module's `time`: only `monotonic` is read, from the test's clock."""

    def __init__(self, clock: list[float]) -> None:
        self._clock = clock

    def monotonic(self) -> float:
        return self._clock[0]


class Registry:
    def __init__(self) -> None:
        self.away = False
        self.beats = 0

    def heartbeat(self) -> None:
        if self.away:
            raise BackendUnavailable("refused")
        self.beats += 1


class Reaper:
    def __init__(self) -> None:
        self.reaps = 0

    def reap_once(self) -> list[str]:
        self.reaps += 1
        return []


def test_the_reaper_waits_a_ttl_of_contact_after_every_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(workers, "time", FakeTime(clock))
    registry, reaper = Registry(), Reaper()
    tripped: list[BaseException] = []
    duty = Maintenance(registry, reaper, interval_s=1.0, on_unavailable=tripped.append)  # type: ignore[arg-type]

    def tick(advance: float = 1.0) -> None:
        duty._safe_tick()
        clock[0] += advance

    for _ in range(3):  # contact begins: a TTL (three intervals) before any judgement
        tick()
    assert reaper.reaps == 0
    tick()
    assert reaper.reaps == 1
    registry.away = True
    tick()
    assert len(tripped) == 1, "the failover hears of it"
    registry.away = False
    for _ in range(3):
        tick()
    assert reaper.reaps == 1, "no judgement in the first TTL after Redis came back"
    tick()
    assert reaper.reaps == 2
