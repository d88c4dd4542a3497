"""Statistics: per-window metrics, one round flattened with its ratios, and the summary
(median, min, max and spread) over the rounds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from .handoff import Handoff
from .params import EVALSHA_1, EVALSHA_N, FAIR, HANDOFF, SEM_1, SEM_N, SEM_NC, SLOW_S
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
        counted = [s.attempts for s in samples]
        attempts = math.nan if None in counted else sum(a or 0 for a in counted)
        found |= {
            "acquire_p50_us": us(percentile(acquires, 0.50)),
            "acquire_p99_us": us(percentile(acquires, 0.99)),
            "release_p50_us": us(percentile(releases, 0.50)),
            "attempts_per_grant": ratio(attempts, grants),
            "slow": sum(sample.slow for sample in samples),
            "timeouts": sum(sample.timeouts for sample in samples),
            "not_released": sum(sample.not_released for sample in samples),
            "longest_wait_ms": max(s.longest_wait_ns for s in samples) / 1e6,
        }
    return found


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when every client got the same, 1/n when one got all."""
    total, squares = sum(values), sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else math.nan


def fairness_metrics(samples: list[Sample]) -> dict[str, float]:
    """Per-client grants inside the window: Jain's index, the fewest, the most."""
    per_client = [len(sample.op_ns) for sample in samples]
    return {
        "jain": jain(per_client),
        "min_grants": min(per_client),
        "max_grants": max(per_client),
    }


def handoff_metrics(handoffs: list[Handoff]) -> dict[str, float]:
    handoff_ns = [h.ns for h in handoffs]
    return {
        "p50_us": us(percentile(handoff_ns, 0.50)),
        "p99_us": us(percentile(handoff_ns, 0.99)),
        "max_us": us(max(handoff_ns, default=math.nan)),
        "slow": sum(ns > SLOW_S * 1e9 for ns in handoff_ns),
        "release_p50_us": us(percentile([h.release_ns for h in handoffs], 0.5)),
        "idle_evalsha_p50_us": us(percentile([h.idle_evalsha_ns for h in handoffs], 0.5)),
    }


def round_metrics(
    windows: dict[tuple[str, str | None], tuple[list[Sample], float]],
    handoffs: dict[str, list[Handoff]],
    duration_s: float,
) -> dict[str, float]:
    """One round, flattened to `measurement[.subject].metric` keys, with its ratios.

    Every ratio is to the EVALSHA baseline of the same round; `of_two_rtt` is pairs/s per
    half the EVALSHA rate: 1.0 would be a pair costing exactly its two round trips.
    """
    flat: dict[str, float] = {}
    for (name, subject), (samples, server_us) in windows.items():
        metrics = window_metrics(samples, duration_s, pairs=subject is not None)
        if name == FAIR:
            metrics |= fairness_metrics(samples)
        metrics["server_us_per_call"] = server_us
        where = name if subject is None else f"{name}.{subject}"
        flat |= {f"{where}.{key}": value for key, value in metrics.items()}
    base_ops, base_p50 = flat[f"{EVALSHA_1}.ops_s"], flat[f"{EVALSHA_1}.p50_us"]
    base_n = flat[f"{EVALSHA_N}.ops_s"]
    for subject, found in handoffs.items():
        flat |= {f"{HANDOFF}.{subject}.{k}": v for k, v in handoff_metrics(found).items()}
    subjects = {key.split(".")[1] for key in flat if key.count(".") == 2}
    for subject in sorted(subjects):

        def get(name: str, metric: str, subject: str = subject) -> float:
            return flat.get(f"{name}.{subject}.{metric}", math.nan)

        sem_1 = get(SEM_1, "ops_s")
        flat[f"ratio.sem_1_throughput.{subject}"] = ratio(sem_1, base_ops)
        flat[f"ratio.sem_1_of_two_rtt.{subject}"] = ratio(2 * sem_1, base_ops)
        flat[f"ratio.sem_1_latency.{subject}"] = ratio(get(SEM_1, "p50_us"), base_p50)
        flat[f"ratio.sem_n_throughput.{subject}"] = ratio(get(SEM_N, "ops_s"), base_n)
        flat[f"ratio.sem_nc_throughput.{subject}"] = ratio(get(SEM_NC, "ops_s"), base_n)
        flat[f"ratio.contended_vs_uncontended.{subject}"] = ratio(
            get(SEM_NC, "ops_s"), get(SEM_N, "ops_s")
        )
        flat[f"ratio.handoff_latency.{subject}"] = ratio(get(HANDOFF, "p50_us"), base_p50)
        flat[f"ratio.handoff_vs_idle.{subject}"] = ratio(
            get(HANDOFF, "p50_us"), get(HANDOFF, "idle_evalsha_p50_us")
        )
    return {k: v for k, v in flat.items() if not (k.startswith("ratio.") and math.isnan(v))}


def summarize(rounds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per metric: median over the rounds, min, max, and spread = (max - min) / median."""
    summary: dict[str, dict[str, float]] = {}
    keys = dict.fromkeys(key for r in rounds for key in r)
    for key in keys:
        values = [r[key] for r in rounds if key in r and not math.isnan(r[key])]
        if not values:
            continue
        median = statistics.median(values)
        spread = (max(values) - min(values)) / median if median else math.nan
        summary[key] = {"median": median, "min": min(values), "max": max(values), "spread": spread}
    return summary
