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
    CONTENDED_LIMIT,
    EVALSHA_1,
    EVALSHA_N,
    HANDOFF,
    MEASUREMENTS,
    SEM_1,
    SEM_N,
    SEM_NC,
)
from .pool import Pool
from .stats import round_metrics
from .window import Sample, WindowSpec


class Bench:
    def __init__(self, pool: Pool, client: redis.Redis, options: argparse.Namespace) -> None:
        self.pool = pool
        self.client = client
        self.options = options
        self.run_id = uuid.uuid4().hex[:8]

    def run(self) -> tuple[list[dict[str, float]], list[Handoff]]:
        options = self.options
        if options.warmup > 0:
            self.round(-1, options.warmup, min(2, options.handoffs))  # discarded
        rounds: list[dict[str, float]] = []
        all_handoffs: list[Handoff] = []
        per_round, extra = divmod(options.handoffs, options.rounds)
        for index in range(options.rounds):
            handoff_count = per_round + (index < extra)
            started = time.monotonic()
            flat, handoffs = self.round(index, options.duration, handoff_count)
            rounds.append(flat)
            all_handoffs += handoffs
            print(
                f"round {index + 1}/{options.rounds} done in {time.monotonic() - started:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        return rounds, all_handoffs

    def round(
        self, index: int, duration_s: float, handoff_count: int
    ) -> tuple[dict[str, float], list[Handoff]]:
        shift = max(0, index) % len(MEASUREMENTS)
        order = MEASUREMENTS[shift:] + MEASUREMENTS[:shift]
        n = self.options.processes
        windows: dict[str, tuple[list[Sample], float]] = {}
        handoffs: list[Handoff] = []
        for name in order:
            prefix = f"bench-{self.run_id}-r{index}-{name}"
            if name == HANDOFF:
                handoffs = handoff_run.measure(self.pool, self.client, prefix, handoff_count)
                continue
            workers, spec = {
                EVALSHA_1: (1, WindowSpec("evalsha")),
                EVALSHA_N: (n, WindowSpec("evalsha")),
                SEM_1: (1, WindowSpec("sem", prefix, 1)),
                SEM_N: (n, WindowSpec("sem", prefix, n)),
                SEM_NC: (n, WindowSpec("sem", prefix, CONTENDED_LIMIT)),
            }[name]
            self.client.config_resetstat()
            samples = self.pool.window(workers, spec, duration_s)
            windows[name] = (samples, self._server_us_per_evalsha())
        return round_metrics(windows, handoffs, duration_s), handoffs

    def _server_us_per_evalsha(self) -> float:
        """Redis's own time per EVALSHA since the last CONFIG RESETSTAT (INFO commandstats)."""
        stats = self.client.info("commandstats").get("cmdstat_evalsha", {})
        return float(stats.get("usec_per_call", math.nan))
