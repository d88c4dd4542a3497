"""The report: the printed table of medians over the rounds, and the JSON document."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .handoff import Handoff
from .params import (
    CONTENDED_LIMIT,
    EVALSHA_1,
    EVALSHA_N,
    HANDOFF,
    HANDOFF_SETTLE_S,
    RETRY_INTERVAL_S,
    SEM_1,
    SEM_N,
    SEM_NC,
    SLOW_S,
)
from .stats import percentile, us

_SETTLE_MS = f"{HANDOFF_SETTLE_S * 1000:g}"
ROWS: list[tuple[str, str, int] | str] = [
    "baseline: EVALSHA of `return 1`",
    (f"{EVALSHA_1}.ops_s", "1 client, ops/s", 0),
    (f"{EVALSHA_1}.p50_us", "1 client, latency p50 (us)", 1),
    (f"{EVALSHA_1}.p99_us", "1 client, latency p99 (us)", 1),
    (f"{EVALSHA_N}.ops_s", "{n} processes, ops/s (total)", 0),
    (f"{EVALSHA_N}.p50_us", "{n} processes, latency p50 (us)", 1),
    (f"{EVALSHA_1}.server_us_per_call", "Redis time per EVALSHA (us, commandstats)", 1),
    "acquire+release pairs",
    (f"{SEM_1}.ops_s", "1 client, pairs/s", 0),
    (f"{SEM_1}.p50_us", "1 client, pair p50 (us)", 1),
    (f"{SEM_1}.p99_us", "1 client, pair p99 (us)", 1),
    (f"{SEM_1}.acquire_p50_us", "1 client, acquire p50 (us)", 1),
    (f"{SEM_1}.release_p50_us", "1 client, release p50 (us)", 1),
    (f"{SEM_1}.server_us_per_call", "1 client, Redis time per script (us)", 1),
    (f"{SEM_N}.ops_s", "{n} processes, limit {n}, pairs/s (total)", 0),
    (f"{SEM_N}.p50_us", "{n} processes, limit {n}, pair p50 (us)", 1),
    (f"{SEM_N}.attempts_per_grant", "{n} processes, limit {n}, scripts per grant", 2),
    (f"{SEM_N}.server_us_per_call", "{n} processes, limit {n}, Redis time/script (us)", 1),
    (f"{SEM_NC}.ops_s", "{n} processes, limit {c}, pairs/s (total)", 0),
    (f"{SEM_NC}.p50_us", "{n} processes, limit {c}, pair p50 (us)", 1),
    (f"{SEM_NC}.p99_us", "{n} processes, limit {c}, pair p99 (us)", 1),
    (f"{SEM_NC}.attempts_per_grant", "{n} processes, limit {c}, scripts per grant", 2),
    (f"{SEM_NC}.server_us_per_call", "{n} processes, limit {c}, Redis time/script (us)", 1),
    (f"{SEM_NC}.slow", "{n} processes, limit {c}, acquires > 1 s", 0),
    (f"{SEM_NC}.timeouts", "{n} processes, limit {c}, acquire timeouts", 0),
    f"handoff (limit 1, waiter retry every {RETRY_INTERVAL_S:g} s, "
    f"clients idle {_SETTLE_MS} ms before)",
    (f"{HANDOFF}.p50_us", "release -> waiter granted, p50 (us)", 1),
    (f"{HANDOFF}.release_p50_us", "the release call alone, p50 (us)", 1),
    (f"{HANDOFF}.idle_evalsha_p50_us", f"EVALSHA after {_SETTLE_MS} ms idle, p50 (us)", 1),
    "ratios (within each round)",
    ("ratio.sem_1_throughput", "1 client: pairs/s / EVALSHA ops/s", 3),
    ("ratio.sem_1_latency", "1 client: pair p50 / EVALSHA p50", 2),
    ("ratio.sem_n_throughput", "{n} proc, limit {n}: pairs/s / EVALSHA ops/s", 3),
    ("ratio.sem_nc_throughput", "{n} proc, limit {c}: pairs/s / EVALSHA ops/s", 3),
    ("ratio.contended_vs_uncontended", "{n} proc: limit {c} pairs/s / limit {n}", 3),
    ("ratio.handoff_latency", "handoff p50 / EVALSHA p50 (1 client)", 2),
    ("ratio.handoff_vs_idle", "handoff p50 / idle EVALSHA p50", 2),
]


def _fmt(value: float, decimals: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{decimals}f}"


def render(
    meta: dict[str, Any], summary: dict[str, dict[str, float]], handoffs: list[Handoff]
) -> str:
    n, c = meta["processes"], CONTENDED_LIMIT
    lines = [
        f"taskmon semaphore benchmark {meta['date']} (commit {meta['commit']})",
        f"{meta['rounds']} rounds x {meta['duration_s']:g} s per measurement, {n} processes, "
        f"redis-server {meta['redis_version']} on 127.0.0.1, {meta['cpus']} CPUs, "
        f"load {meta['load_before']:.2f} -> {meta['load_after']:.2f}, "
        f"Python {meta['python']}, redis-py {meta['redis_py']}",
        "",
        f"{'metric (median over rounds)':<48}{'median':>11}{'min':>11}{'max':>11}{'spread':>8}",
    ]
    for row in ROWS:
        if isinstance(row, str):
            lines.append(f"-- {row}")
            continue
        key, label, decimals = row
        stats = summary.get(key)
        if stats is None:
            continue
        cells = "".join(f"{_fmt(stats[k], decimals):>11}" for k in ("median", "min", "max"))
        spread = "" if math.isnan(stats["spread"]) else f"{stats['spread']:.0%}"
        lines.append(f"  {label.format(n=n, c=c):<46}{cells}{spread:>8}")
    ns = [h.ns for h in handoffs]
    attempts = Counter(h.attempts for h in handoffs)
    slow = sum(x > SLOW_S * 1e9 for x in ns)
    lines += [
        "",
        f"handoff, all {len(ns)} pooled: p50 {_fmt(us(percentile(ns, 0.5)), 1)} us, "
        f"p90 {_fmt(us(percentile(ns, 0.9)), 1)} us, p99 {_fmt(us(percentile(ns, 0.99)), 1)} "
        f"us, max {_fmt(us(max(ns, default=math.nan)), 1)} us; "
        f"{slow} of {len(ns)} took > {SLOW_S:g} s (lost wake-up)",
        "handoff acquire scripts per grant: "
        + ", ".join(f"{k}: {v}x" for k, v in sorted(attempts.items()))
        + " (1 = queued once, then handed the grant; more = lost announcements)",
    ]
    if not all(h.released for h in handoffs):
        lines.append("WARNING: some releases by A answered False (the lease had ended)")
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_json(
    path: Path,
    meta: dict[str, Any],
    summary: dict[str, dict[str, float]],
    rounds: list[dict[str, float]],
    handoffs: list[Handoff],
) -> None:
    """The whole run as JSON (NaN as null): meta, summary, every round, every handoff."""
    document = {
        "meta": meta,
        "summary": summary,
        "rounds": rounds,
        "handoffs": [asdict(h) for h in handoffs],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json_safe(document), indent=2) + "\n")
