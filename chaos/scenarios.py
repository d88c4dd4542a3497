"""The chaos scenarios: each a fault, when it strikes, what it is expected to do to the service.

A scenario names its fault (faults.py carries it out), how long it lasts, how many instances
the stack has, and which promises its checker judges (judge.py). The expectations are written
here in words too, so the report can print them beside the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

# The stack every scenario runs: one global cap of 4 over 4 workers, so each worker's share is
# 1 while degraded; leases of 2 s, so "past the lease" is a few seconds.
LIMIT = 4
WORKERS = 4
LEASE_TTL_MS = 2000
DETECT_BOUND_S = 1.0
REPROMOTE_BOUND_S = 5.0
# WARNING/ERROR lines one worker may log for one outage, whatever its length (the failover
# layer logs each switch once and holds repeats back).
LOG_LINES_PER_OUTAGE = 12


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    fault: str  # faults.py's name for what is done
    seconds: float  # how long the fault lasts (a kill: how long the run watches after it)
    expectations: tuple[str, ...]
    instances: int = 1
    smoke: bool = False
    redis_fault: bool = True  # Redis is cut for some workers: detect, re-promote, degraded
    cut_instances: tuple[int, ...] = (0,)  # the instances whose Redis the fault reaches
    period_s: float = 0.0  # flapping: down and up in turns of this length
    engine: str = "tone"
    # The fault proxy also stands in front of the first instance's HTTP port, and retrying
    # clients (loadtests/retrying.py) send their submissions through it first.
    http_front: bool = False

    @property
    def outages(self) -> int:
        if self.period_s:
            return max(1, int(self.seconds // (2 * self.period_s)))
        return 1


_REDIS_CUT = (
    "no 5xx and no dropped call: degraded answers only (202, 421, 429)",
    "every accepted task ends done or failed and is readable from every instance afterwards",
    "the cap holds as the policy promises: partition, the sum of each worker's max(share, "
    "carried); reject, the limit; the limit again once the re-promotion has settled",
    f"every cut worker detects within {DETECT_BOUND_S:.0f} s and re-promotes within "
    f"{REPROMOTE_BOUND_S:.0f} s of Redis answering again",
    f"at most {LOG_LINES_PER_OUTAGE} warning lines per worker per outage, no traceback",
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "redis-down",
            "Redis unreachable for 10 s (the proxy disabled: connections refused and closed)",
            "proxy-down",
            10.0,
            _REDIS_CUT,
            smoke=True,
        ),
        Scenario(
            "redis-blackhole",
            "Redis blackholed for 10 s (timeout toxic 0: connections open, nothing answers)",
            "blackhole",
            10.0,
            _REDIS_CUT,
        ),
        Scenario(
            "redis-latency",
            "500 ms latency on every Redis reply for 10 s (above the 0.3 s hot-path timeout)",
            "latency",
            10.0,
            _REDIS_CUT,
        ),
        Scenario(
            "redis-reset",
            "every Redis connection reset by peer for 10 s (reset_peer toxic)",
            "reset",
            10.0,
            _REDIS_CUT,
        ),
        Scenario(
            "redis-restarted-empty",
            "Redis killed, down 3 s, restarted with no data (no persistence)",
            "restart-empty",
            3.0,
            (
                *_REDIS_CUT,
                "every task in flight at the restart is written back: none answers 404 after",
            ),
            smoke=True,
        ),
        Scenario(
            "redis-paused",
            "Redis frozen with SIGSTOP for 5 s, past the 2 s lease (a hung server)",
            "pause",
            5.0,
            _REDIS_CUT,
        ),
        Scenario(
            "redis-flapping",
            "Redis down and up every 3 s for a minute",
            "flapping",
            60.0,
            _REDIS_CUT,
            period_s=3.0,
        ),
        Scenario(
            "worker-killed",
            "a gunicorn worker holding permits SIGKILLed (gunicorn starts another)",
            "kill-worker",
            8.0,
            (
                "no 5xx; only the connections the dead worker had open drop (within 2 s of its "
                "death)",
                "every accepted task ends: the dead worker's fail `abandoned`, none stays running",
                "the cap holds all along (its permits are the store's until their lease ends)",
            ),
            smoke=True,
            redis_fault=False,
        ),
        Scenario(
            "worker-frozen",
            "a gunicorn worker holding permits frozen with SIGSTOP for 5 s, past its 2 s lease",
            "freeze-worker",
            5.0,
            (
                "no 5xx and no dropped call (calls to the frozen worker wait, then answer)",
                "every accepted task ends; the frozen worker's syntheses end `lease_lost` (or "
                "`abandoned`, when a reaper takes it for dead first)",
                "the cap may be exceeded only by the frozen worker's syntheses, and only from "
                "their lease's end until it runs again (the documented overlap bound)",
            ),
            redis_fault=False,
        ),
        Scenario(
            "instance-partitioned",
            "one instance of two loses Redis for 10 s; the other keeps it",
            "proxy-down",
            10.0,
            (
                *_REDIS_CUT,
                "the other instance never degrades and keeps serving through Redis",
            ),
            instances=2,
            smoke=True,
        ),
        Scenario(
            "http-faults",
            "HTTP faults in front of one instance of two for 15 s, rolled per call: 503 "
            "before the service sees it (0.3), the service's answer replaced by a 502 after "
            "it acted (0.3), the answer held 5 s, past the client's 2.5 s timeout (0.2); "
            "clients retry with the same Idempotency-Key",
            "http-faults",
            15.0,
            (
                "the service answers no 5xx itself: every 5xx a client saw carries the fault "
                "proxy's X-Fault-Injected and stands for no 5xx of the service's "
                "(X-Fault-Replaced); no more tries time out than the proxy held answers",
                "every retried key is accepted in the end, and every answer under one key, "
                "a replay on the other instance included, names the same task",
                "no synthesis runs that no client was given: a retry after a lost answer "
                "replays the task, never runs it again (the journals against the answers)",
                "every accepted task ends done and every instance reads that end",
                "the cap holds all along",
            ),
            instances=2,
            smoke=True,
            redis_fault=False,
            http_front=True,
        ),
    )
}

SMOKE = tuple(name for name, scenario in SCENARIOS.items() if scenario.smoke)
