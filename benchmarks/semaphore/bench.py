"""The rounds: every round measures every metric once, in an order rotated from round to
round, so the noise of a shared machine hits all metrics alike.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import uuid

import redis

from . import handoff_run
from .handoff import Handoff
from .params import (
    BASELINES,
    CONTENDED_LIMIT,
    EVALSHA_1,
    FAIR,
    FAIR_CLIENTS,
    FAIR_HOLD_S,
    FAIR_LIMIT,
    HANDOFF,
    LIMIT_ABOVE_1,
    MEASUREMENTS,
    SEM_1,
    SEM_N,
    SEM_NC,
)
from .pool import Pool
from .stats import round_metrics
from .subjects import PEERS
from .window import Sample, WindowSpec

Combo = tuple[str, str | None]  # (measurement, subject); None for the EVALSHA baselines


def combos(subjects: list[str]) -> list[Combo]:
    """Every measurement of every subject that can take it, baselines first."""
    found: list[Combo] = [(name, None) for name in BASELINES]
    for name in MEASUREMENTS:
        if name in BASELINES:
            continue
        for subject in subjects:
            if not (PEERS[subject].mutex and name in LIMIT_ABOVE_1):
                found.append((name, subject))
    return found


class Bench:
    def __init__(self, pool: Pool, client: redis.Redis, options: argparse.Namespace) -> None:
        self.pool = pool
        self.client = client
        self.options = options
        self.run_id = uuid.uuid4().hex[:8]
        self.combos = combos(options.subjects)

    def run(self) -> tuple[list[dict[str, float]], dict[str, list[Handoff]]]:
        options = self.options
        if options.warmup > 0:
            self.round(-1, options.warmup, min(2, options.handoffs))  # discarded
        rounds: list[dict[str, float]] = []
        all_handoffs: dict[str, list[Handoff]] = {subject: [] for subject in options.subjects}
        per_round, extra = divmod(options.handoffs, options.rounds)
        for index in range(options.rounds):
            handoff_count = per_round + (index < extra)
            started = time.monotonic()
            flat, handoffs = self.round(index, options.duration, handoff_count)
            rounds.append(flat)
            for subject, found in handoffs.items():
                all_handoffs[subject] += found
            print(
                f"round {index + 1}/{options.rounds} done in {time.monotonic() - started:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        return rounds, all_handoffs

    def round(
        self, index: int, duration_s: float, handoff_count: int
    ) -> tuple[dict[str, float], dict[str, list[Handoff]]]:
        shift = max(0, index) % len(self.combos)
        order = self.combos[shift:] + self.combos[:shift]
        n = self.options.processes
        windows: dict[tuple[str, str | None], tuple[list[Sample], float]] = {}
        handoffs: dict[str, list[Handoff]] = {}
        for name, subject in order:
            prefix = f"bench-{self.run_id}-r{index}-{name}-{subject or 'base'}"
            if name == HANDOFF and subject is not None:
                handoffs[subject] = handoff_run.measure(
                    self.pool, self.client, subject, prefix, handoff_count
                )
                continue
            if subject is None:
                workers, spec = (1 if name == EVALSHA_1 else n), WindowSpec("evalsha")
            else:
                workers, spec = self._spec(name, subject, prefix)
            self.client.config_resetstat()
            samples = self.pool.window(workers, spec, duration_s)
            windows[name, subject] = (samples, self._server_us_per_evalsha())
        return round_metrics(windows, handoffs, duration_s), handoffs

    def _spec(self, name: str, subject: str, prefix: str) -> tuple[int, WindowSpec]:
        n, mutex = self.options.processes, PEERS[subject].mutex
        if name == SEM_1:
            return 1, WindowSpec("sem", prefix, 1, subject=subject)
        if name == SEM_N:
            return n, WindowSpec("sem", prefix, 1 if mutex else n, subject=subject,
                                 key_per_worker=mutex)  # fmt: skip
        if name == SEM_NC:
            return n, WindowSpec("sem", prefix, CONTENDED_LIMIT, subject=subject)
        if name == FAIR:
            return FAIR_CLIENTS, WindowSpec(
                "sem", prefix, FAIR_LIMIT, subject=subject, hold_s=FAIR_HOLD_S
            )
        raise ValueError(f"unknown measurement {name!r}")

    def _server_us_per_evalsha(self) -> float:
        """Redis's own time per EVALSHA since the last CONFIG RESETSTAT (INFO commandstats)."""
        stats = self.client.info("commandstats").get("cmdstat_evalsha", {})
        return float(stats.get("usec_per_call", math.nan))
