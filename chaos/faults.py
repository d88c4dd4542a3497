"""The faults themselves: what each scenario does to Redis, its network, or a worker.

Network faults go through the fault proxy's API (proxy_control.py), so they act on the TCP
connections between the workers and Redis exactly as Toxiproxy's do; process faults signal a
real redis-server or a real gunicorn worker. Every fault is mended in a `finally`, and each
records its windows (monotonic and wall-clock start and end) for the judge and the plots.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.concurrency import running_starts
from chaos.proxy_control import FaultProxyControl
from chaos.scenarios import Scenario
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.stack import GunicornInstance

# A synthesis of the load's sentences takes 0.3 s or more (tone engine, 10 ms a character).
FRESH_S = 0.12

# Toxics per network fault: (type, stream, attributes, toxicity). Both directions for a
# blackhole: a network that drops packets drops them both ways.
TOXICS: dict[str, list[tuple[str, str, dict[str, Any], float]]] = {
    "blackhole": [
        ("timeout", "upstream", {"timeout": 0}, 1.0),
        ("timeout", "downstream", {"timeout": 0}, 1.0),
    ],
    "latency": [("latency", "downstream", {"latency": 500, "jitter": 0}, 1.0)],
    "reset": [("reset_peer", "upstream", {"timeout": 0}, 1.0)],
    # In front of the service (taskmon's fault proxy only: Toxiproxy has no HTTP toxics).
    # Each connection carries one call, so a toxicity is a share of calls.
    "http-faults": [
        ("http_error", "upstream", {"status": 503}, 0.3),
        ("http_error", "downstream", {"status": 502}, 0.3),
        ("slow_headers", "downstream", {"delay": 5000}, 0.2),
    ],
}
HTTP_FAULTS = frozenset({"http-faults"})  # faults whose toxics go on the front proxy


@dataclass
class Window:
    """One stretch of a fault: from its injection to its mending."""

    name: str
    start: float  # CLOCK_MONOTONIC seconds, the clock of the journals and the records
    start_wall: float
    end: float | None = None
    end_wall: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        self.end, self.end_wall = time.monotonic(), time.time()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "start": self.start,
            "end": self.end,
            "seconds": None if self.end is None else round(self.end - self.start, 3),
            **self.details,
        }


def open_window(name: str, **details: Any) -> Window:
    return Window(name, time.monotonic(), time.time(), details=details)


@dataclass
class Target:
    """What a fault may touch."""

    redis: RedisServer
    proxies: FaultProxyControl
    proxy_names: list[str]  # one proxy per instance, in instance order
    instances: list[GunicornInstance]
    journal_dir: Path
    front_proxy: str | None = None  # the proxy in front of the first instance's HTTP port


class FaultRun:
    """Carries out one scenario's fault: `run(during)` injects, calls `during()` once in the
    first outage (the steady-state probe), waits out the fault, and mends it, always."""

    def __init__(self, scenario: Scenario, target: Target, stopping: threading.Event) -> None:
        self.scenario = scenario
        self.target = target
        self.stopping = stopping
        self.windows: list[Window] = []
        self.victim: int | None = None  # the worker pid a process fault chose
        self.held_by_victim = 0

    def run(self, during: Callable[[], None]) -> None:
        fault = self.scenario.fault
        if fault == "flapping":
            self._flap(during)
            return
        inject, mend = self._actions(fault)
        window = open_window(fault)
        self.windows.append(window)
        try:
            inject()
            if self.victim is not None:
                window.details.update(victim=self.victim, held=self.held_by_victim)
            self._wait(min(1.5, self.scenario.seconds / 2))
            during()
            self._wait(self.scenario.seconds - (time.monotonic() - window.start))
        finally:
            try:
                mend()
            finally:
                window.close()

    def _flap(self, during: Callable[[], None]) -> None:
        period = self.scenario.period_s
        inject, mend = self._actions("proxy-down")
        for number in range(self.scenario.outages):
            window = open_window(f"flap {number + 1}")
            self.windows.append(window)
            try:
                inject()
                if number == 0:
                    during()
                self._wait(period - (time.monotonic() - window.start))
            finally:
                try:
                    mend()
                finally:
                    window.close()
            self._wait(period)
            if self.stopping.is_set():
                return

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self.stopping.wait(seconds)

    # -- the actions -----------------------------------------------------------------------

    def _cut_proxies(self) -> list[Any]:
        if self.scenario.fault in HTTP_FAULTS:
            if self.target.front_proxy is None:
                raise RuntimeError(f"{self.scenario.fault} needs the proxy in front of the service")
            return [self.target.proxies.proxy(self.target.front_proxy)]
        return [
            self.target.proxies.proxy(self.target.proxy_names[index])
            for index in self.scenario.cut_instances
        ]

    def _actions(self, fault: str) -> tuple[Callable[[], None], Callable[[], None]]:
        redis = self.target.redis
        if fault == "proxy-down":
            return self._disable, self._enable
        if fault in TOXICS:
            return lambda: self._add_toxics(fault), lambda: self._remove_toxics(fault)
        if fault == "restart-empty":
            return redis.stop, self._start_redis
        if fault == "pause":
            return redis.pause, redis.resume
        if fault == "kill-worker":
            return lambda: self._signal_victim(signal.SIGKILL), lambda: None
        if fault == "freeze-worker":
            return lambda: self._signal_victim(signal.SIGSTOP), self._thaw
        raise ValueError(f"no such fault: {fault}")

    def _start_redis(self) -> None:
        self.target.redis.start()

    def _disable(self) -> None:
        for proxy in self._cut_proxies():
            proxy.disable()

    def _enable(self) -> None:
        for proxy in self._cut_proxies():
            proxy.enable()

    def _add_toxics(self, fault: str) -> None:
        for proxy in self._cut_proxies():
            for number, (kind, stream, attributes, toxicity) in enumerate(TOXICS[fault]):
                proxy.add_toxic(
                    type=kind, name=f"{fault}_{number}", stream=stream, attributes=attributes,
                    toxicity=toxicity,
                )  # fmt: skip
            # toxiproxy-python does not look at the answer: make sure the fault is in place.
            present = set(proxy.toxics())
            missing = {f"{fault}_{n}" for n in range(len(TOXICS[fault]))} - present
            if missing:
                raise RuntimeError(f"the fault proxy did not take the toxics {sorted(missing)}")

    def _remove_toxics(self, fault: str) -> None:
        # What each toxic met and hit, read before it goes (taskmon's proxy counts them; a
        # real Toxiproxy does not, and then nothing is kept).
        reached: dict[str, Any] = {}
        for proxy in self._cut_proxies():
            name = self._key_of(proxy)
            try:
                toxics = self.target.proxies.details(name).get("toxics") or []
            except Exception:  # noqa: S112 (the counts are evidence, not a step: mend first)
                continue
            reached |= {
                f"{name}/{t['name']}": {
                    **t["stats"], "type": t.get("type"), "toxicity": t.get("toxicity", 1.0)
                }
                for t in toxics if "stats" in t
            }  # fmt: skip
        if reached:
            self.windows[-1].details.setdefault("toxics", {}).update(reached)
        for proxy in self._cut_proxies():
            for number in range(len(TOXICS[fault])):
                proxy.destroy_toxic(f"{fault}_{number}")

    def _key_of(self, proxy: Any) -> str:
        """The run's own name of a proxy (the API's name has a suffix unique to the run)."""
        return next(key for key, known in self.target.proxies.proxies.items() if known is proxy)

    def _signal_victim(self, signum: int) -> None:
        instance = self.target.instances[0]
        pid, held = self._busiest_worker(instance)
        self.victim, self.held_by_victim = pid, held
        instance.signal_worker(pid, signum)
        # The fault is the signal: its window starts once it is sent (not when the search for
        # a holder did), so every connection the worker had open was opened before it.
        window = self.windows[-1]
        window.start, window.start_wall = time.monotonic(), time.time()

    def _thaw(self) -> None:
        if self.victim is not None:
            with contextlib.suppress(ProcessLookupError, ValueError):
                self.target.instances[0].signal_worker(self.victim, signal.SIGCONT)

    def _busiest_worker(self, instance: GunicornInstance) -> tuple[int, int]:
        """The worker running the most syntheses now (by the journal), one of them begun
        within FRESH_S, waiting up to 10 s for one: the fault must hit a holder of permits,
        and a synthesis that just began is still running when the signal lands."""
        deadline = time.monotonic() + 10
        pids = set(instance.worker_pids())
        while True:
            running = running_starts(self.target.journal_dir)
            now = time.monotonic()
            busy = {
                pid: len(starts) for pid, starts in running.items()
                if pid in pids and starts and now - max(starts) < FRESH_S
            }  # fmt: skip
            if busy:
                pid = max(busy, key=lambda p: busy[p])
                return pid, busy[pid]
            if now > deadline or self.stopping.is_set():
                raise RuntimeError("no worker held a permit within 10 s: is the load running?")
            time.sleep(0.01)
