"""Statistics: per-window metrics, one round flattened with its ratios, and the summary
(median, min, max and spread) over the rounds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from .handoff import Handoff
from .params import EVALSHA_1, EVALSHA_N, HANDOFF, SEM_1, SEM_N, SEM_NC, SLOW_S
from .window import Sample


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of unsorted values; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return float(ordered[max(1, math.ceil(q * len(ordered))) - 1])


def us(ns: float) -> float:
    return ns / 1000.0


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def window_metrics(samples: list[Sample], duration_s: float, *, pairs: bool) -> dict[str, float]:
    ops = [ns for sample in samples for ns in sample.op_ns]
    found = {
        "ops_s": len(ops) / duration_s,
        "p50_us": us(percentile(ops, 0.50)),
        "p99_us": us(percentile(ops, 0.99)),
    }
    if pairs:
        acquires = [ns for sample in samples for ns in sample.acquire_ns]
        releases = [
            o - a
            for sample in samples
            for o, a in zip(sample.op_ns, sample.acquire_ns, strict=True)
        ]
        grants = sum(sample.grants for sample in samples)
        found |= {
            "acquire_p50_us": us(percentile(acquires, 0.50)),
            "acquire_p99_us": us(percentile(acquires, 0.99)),
            "release_p50_us": us(percentile(releases, 0.50)),
            "attempts_per_grant": ratio(sum(s.attempts for s in samples), grants),
            "slow": sum(sample.slow for sample in samples),
            "timeouts": sum(sample.timeouts for sample in samples),
            "not_released": sum(sample.not_released for sample in samples),
        }
    return found


def round_metrics(
    windows: dict[str, tuple[list[Sample], float]], handoffs: list[Handoff], duration_s: float
) -> dict[str, float]:
    """One round, flattened to `measurement.metric` keys, with the ratios of that round."""
    flat: dict[str, float] = {}
    for name, (samples, server_us) in windows.items():
        metrics = window_metrics(samples, duration_s, pairs=name.startswith("sem"))
        metrics["server_us_per_call"] = server_us
        flat |= {f"{name}.{key}": value for key, value in metrics.items()}
    handoff_ns = [h.ns for h in handoffs]
    flat[f"{HANDOFF}.p50_us"] = us(percentile(handoff_ns, 0.50))
    flat[f"{HANDOFF}.max_us"] = us(max(handoff_ns, default=math.nan))
    flat[f"{HANDOFF}.slow"] = sum(ns > SLOW_S * 1e9 for ns in handoff_ns)
    flat[f"{HANDOFF}.release_p50_us"] = us(percentile([h.release_ns for h in handoffs], 0.5))
    idle_p50 = us(percentile([h.idle_evalsha_ns for h in handoffs], 0.5))
    flat[f"{HANDOFF}.idle_evalsha_p50_us"] = idle_p50
    base_ops, base_p50 = flat[f"{EVALSHA_1}.ops_s"], flat[f"{EVALSHA_1}.p50_us"]
    flat["ratio.sem_1_throughput"] = ratio(flat[f"{SEM_1}.ops_s"], base_ops)
    flat["ratio.sem_1_latency"] = ratio(flat[f"{SEM_1}.p50_us"], base_p50)
    flat["ratio.sem_n_throughput"] = ratio(flat[f"{SEM_N}.ops_s"], flat[f"{EVALSHA_N}.ops_s"])
    flat["ratio.sem_nc_throughput"] = ratio(flat[f"{SEM_NC}.ops_s"], flat[f"{EVALSHA_N}.ops_s"])
    flat["ratio.contended_vs_uncontended"] = ratio(flat[f"{SEM_NC}.ops_s"], flat[f"{SEM_N}.ops_s"])
    flat["ratio.handoff_latency"] = ratio(flat[f"{HANDOFF}.p50_us"], base_p50)
    flat["ratio.handoff_vs_idle"] = ratio(flat[f"{HANDOFF}.p50_us"], idle_p50)
    return flat


def summarize(rounds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per metric: median over the rounds, min, max, and spread = (max - min) / median."""
    summary: dict[str, dict[str, float]] = {}
    for key in rounds[0]:
        values = [r[key] for r in rounds if not math.isnan(r[key])]
        if not values:
            continue
        median = statistics.median(values)
        spread = (max(values) - min(values)) / median if median else math.nan
        summary[key] = {"median": median, "min": min(values), "max": max(values), "spread": spread}
    return summary
