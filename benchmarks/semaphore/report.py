"""The report: the printed table of medians over the rounds, and the JSON document."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import output
from .handoff import Handoff
from .params import (
    CONTENDED_LIMIT,
    EVALSHA_1,
    EVALSHA_N,
    FAIR,
    FAIR_CLIENTS,
    FAIR_HOLD_S,
    FAIR_LIMIT,
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
    "taskmon: acquire+release pairs",
    (f"{SEM_1}.taskmon.ops_s", "1 client, pairs/s", 0),
    (f"{SEM_1}.taskmon.p50_us", "1 client, pair p50 (us)", 1),
    (f"{SEM_1}.taskmon.p99_us", "1 client, pair p99 (us)", 1),
    (f"{SEM_1}.taskmon.acquire_p50_us", "1 client, acquire p50 (us)", 1),
    (f"{SEM_1}.taskmon.release_p50_us", "1 client, release p50 (us)", 1),
    (f"{SEM_1}.taskmon.server_us_per_call", "1 client, Redis time per script (us)", 1),
    (f"{SEM_N}.taskmon.ops_s", "{n} processes, limit {n}, pairs/s (total)", 0),
    (f"{SEM_N}.taskmon.p50_us", "{n} processes, limit {n}, pair p50 (us)", 1),
    (f"{SEM_N}.taskmon.attempts_per_grant", "{n} processes, limit {n}, scripts per grant", 2),
    (f"{SEM_N}.taskmon.server_us_per_call", "{n} processes, limit {n}, Redis time/script (us)", 1),
    (f"{SEM_NC}.taskmon.ops_s", "{n} processes, limit {c}, pairs/s (total)", 0),
    (f"{SEM_NC}.taskmon.p50_us", "{n} processes, limit {c}, pair p50 (us)", 1),
    (f"{SEM_NC}.taskmon.p99_us", "{n} processes, limit {c}, pair p99 (us)", 1),
    (f"{SEM_NC}.taskmon.attempts_per_grant", "{n} processes, limit {c}, scripts per grant", 2),
    (f"{SEM_NC}.taskmon.server_us_per_call", "{n} processes, limit {c}, Redis time/script (us)", 1),
    (f"{SEM_NC}.taskmon.slow", "{n} processes, limit {c}, acquires > 1 s", 0),
    (f"{SEM_NC}.taskmon.timeouts", "{n} processes, limit {c}, acquire timeouts", 0),
    f"taskmon handoff (limit 1, waiter retry every {RETRY_INTERVAL_S:g} s, "
    f"clients idle {_SETTLE_MS} ms before)",
    (f"{HANDOFF}.taskmon.p50_us", "release -> waiter granted, p50 (us)", 1),
    (f"{FAIR}.taskmon.jain", f"fairness: Jain's index, {FAIR_CLIENTS} clients", 3),
    (f"{HANDOFF}.taskmon.release_p50_us", "the release call alone, p50 (us)", 1),
    (f"{HANDOFF}.taskmon.idle_evalsha_p50_us", f"EVALSHA after {_SETTLE_MS} ms idle, p50 (us)", 1),
    "taskmon ratios (within each round)",
    ("ratio.sem_1_throughput.taskmon", "1 client: pairs/s / EVALSHA ops/s", 3),
    ("ratio.sem_1_of_two_rtt.taskmon", "1 client: pairs/s / (EVALSHA ops/s / 2)", 3),
    ("ratio.sem_1_latency.taskmon", "1 client: pair p50 / EVALSHA p50", 2),
    ("ratio.sem_n_throughput.taskmon", "{n} proc, limit {n}: pairs/s / EVALSHA ops/s", 3),
    ("ratio.sem_nc_throughput.taskmon", "{n} proc, limit {c}: pairs/s / EVALSHA ops/s", 3),
    ("ratio.contended_vs_uncontended.taskmon", "{n} proc: limit {c} pairs/s / limit {n}", 3),
    ("ratio.handoff_latency.taskmon", "handoff p50 / EVALSHA p50 (1 client)", 2),
    ("ratio.handoff_vs_idle.taskmon", "handoff p50 / idle EVALSHA p50", 2),
]


def _fmt(value: float, decimals: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{decimals}f}"


def render(
    meta: dict[str, Any], summary: dict[str, dict[str, float]], handoffs: dict[str, list[Handoff]]
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
    mine = handoffs.get("taskmon", [])
    ns = [h.ns for h in mine]
    attempts = Counter(h.attempts for h in mine)
    slow = sum(x > SLOW_S * 1e9 for x in ns)
    lines += [
        "",
        f"taskmon handoff, all {len(ns)} pooled: p50 {_fmt(us(percentile(ns, 0.5)), 1)} us, "
        f"p90 {_fmt(us(percentile(ns, 0.9)), 1)} us, p99 {_fmt(us(percentile(ns, 0.99)), 1)} "
        f"us, max {_fmt(us(max(ns, default=math.nan)), 1)} us; "
        f"{slow} of {len(ns)} took > {SLOW_S:g} s (lost wake-up)",
        "taskmon handoff acquire scripts per grant: "
        + ", ".join(f"{k}: {v}x" for k, v in sorted(attempts.items(), key=str))
        + " (1 = queued once, then handed the grant; more = lost announcements)",
    ]
    if not all(h.released for h in mine):
        lines.append("WARNING: some releases by A answered False (the lease had ended)")
    return "\n".join([*lines, "", *render_peers(meta, peer_table(summary, handoffs))])


PEER_COLUMNS: list[tuple[str, str, int]] = [
    ("sem_1_ops_s", "1c pairs/s", 0),
    ("sem_1_of_two_rtt", "of 2 RTT", 2),
    ("sem_n_ops_s", "{n}p pairs/s", 0),
    ("sem_nc_ops_s", "{n}p lim{c}", 0),
    ("contended_vs_uncontended", "lim{c}/lim{n}", 2),
    ("handoff_p50_ms", "hand p50ms", 2),
    ("handoff_p99_ms", "hand p99ms", 2),
    ("jain", "Jain", 3),
    ("min_grants", "min grants", 0),
    ("longest_wait_ms", "max wait ms", 1),
]


def peer_table(
    summary: dict[str, dict[str, float]], handoffs: dict[str, list[Handoff]]
) -> dict[str, dict[str, float]]:
    """Per subject: the figures compared across peers (medians; handoffs pooled over rounds)."""

    def median(key: str) -> float:
        return summary.get(key, {}).get("median", math.nan)

    table: dict[str, dict[str, float]] = {}
    for subject, found in handoffs.items():
        ns = [h.ns for h in found]
        table[subject] = {
            "sem_1_ops_s": median(f"{SEM_1}.{subject}.ops_s"),
            "sem_1_of_two_rtt": median(f"ratio.sem_1_of_two_rtt.{subject}"),
            "sem_n_ops_s": median(f"{SEM_N}.{subject}.ops_s"),
            "sem_nc_ops_s": median(f"{SEM_NC}.{subject}.ops_s"),
            "contended_vs_uncontended": median(f"ratio.contended_vs_uncontended.{subject}"),
            "handoff_p50_ms": percentile(ns, 0.5) / 1e6,
            "handoff_p99_ms": percentile(ns, 0.99) / 1e6,
            "handoffs": len(ns),
            "jain": median(f"{FAIR}.{subject}.jain"),
            "min_grants": median(f"{FAIR}.{subject}.min_grants"),
            "longest_wait_ms": median(f"{FAIR}.{subject}.longest_wait_ms"),
        }
    return table


def render_peers(meta: dict[str, Any], table: dict[str, dict[str, float]]) -> list[str]:
    n, c = meta["processes"], CONTENDED_LIMIT
    heads = "".join(f"{label.format(n=n, c=c):>12}" for _, label, _ in PEER_COLUMNS)
    lines = [
        f"-- peers, side by side (medians over rounds; handoffs pooled; fairness: "
        f"{FAIR_CLIENTS} processes, {FAIR_LIMIT} permits, each held {FAIR_HOLD_S * 1000:g} ms)",
        f"  {'subject':<22}{heads}",
    ]
    for subject, row in table.items():
        cells = "".join(f"{_fmt(row[key], d):>12}" for key, _, d in PEER_COLUMNS)
        lines.append(f"  {subject:<22}{cells}")
    lines.append("  n/a: a mutex has no limit above 1; of 2 RTT = pairs/s / (EVALSHA ops/s / 2)")
    return lines


def write_json(
    path: Path,
    meta: dict[str, Any],
    summary: dict[str, dict[str, float]],
    rounds: list[dict[str, float]],
    handoffs: dict[str, list[Handoff]],
) -> None:
    """The whole run as JSON (NaN as null): meta, summary, peers, every round and handoff."""
    document = {
        "meta": meta,
        "summary": summary,
        "peers": peer_table(summary, handoffs),
        "rounds": rounds,
        "handoffs": {subject: [asdict(h) for h in found] for subject, found in handoffs.items()},
    }
    output.write_json(path, document)
