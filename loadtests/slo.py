"""Service levels of a run (loadtests/slo.toml): error budgets, latency, SSE, the generator.

Latency is judged from every call the users recorded, not from Locust's summaries; the
percentiles over time (plots.py) are per window, not cumulative. The generator's health
decides whether latency can be judged at all: a lagging generator measures itself.
"""

from __future__ import annotations

import math
import tomllib
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtests.evidence import Evidence, Record

DEFAULT_SLO = Path(__file__).with_name("slo.toml")
PERCENTILES = (50, 95, 99)


def load_slo(path: Path | None = None) -> dict[str, Any]:
    """The tolerances; ValueError naming the file and the problem when it cannot be read."""
    path = path or DEFAULT_SLO
    try:
        with path.open("rb") as source:
            slo = tomllib.load(source)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read the SLO file {path}: {exc}") from None
    for section in ("errors", "latency_p99_ms", "sse", "generator"):
        if not isinstance(slo.get(section), dict):
            raise ValueError(f"{path}: section [{section}] is missing")
    return slo


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no values (no data is not a fast answer)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class EndpointStats:
    name: str
    requests: int = 0
    ok: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    statuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self, seconds: float) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failures": self.requests - self.ok,
            "rps": round(self.requests / seconds, 3) if seconds > 0 else None,
            "outcomes": dict(self.outcomes),
            "statuses": dict(self.statuses),
            **{f"p{p}_ms": _round(percentile(self.latencies_ms, p)) for p in PERCENTILES},
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def endpoint_stats(records: list[Record]) -> dict[str, EndpointStats]:
    stats: dict[str, EndpointStats] = {}
    for record in records:
        if record["k"] != "req":
            continue
        entry = stats.setdefault(record["name"], EndpointStats(record["name"]))
        entry.requests += 1
        entry.ok += record["outcome"] == "ok"
        entry.outcomes[record["outcome"]] += 1
        entry.statuses[str(record["status"])] += 1
        if record["status"] is not None:
            entry.latencies_ms.append(record["ms"])
    return stats


@dataclass
class Check:
    """One service level: the rule, what was measured, the limit, and whether it held."""

    name: str
    kind: str  # errors | latency | sse | generator
    measured: float | None
    limit: float
    held: bool | None  # None: no data to judge

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sse_timings(evidence: Evidence) -> tuple[list[float], list[float]]:
    """(open -> first event ms, task end -> terminal event arrival ms) over fresh streams.

    A stream resumed with Last-Event-ID is left out: its first event is the task's next
    change, which comes when the task moves, not when the stream opens.
    """
    offsets = [r["offset"] for r in evidence.of("clock")]
    wall_minus_mono = offsets[0] if offsets else None
    first, lag = [], []
    for record in evidence.of("stream"):
        events = record["events"]
        if not events or record.get("resumed_from") is not None:
            continue
        first.append((events[0][2] - record["t"]) * 1000)
        if wall_minus_mono is not None:
            for event in events:
                finished_at = event[4] if len(event) > 4 else None
                if event[1] in ("done", "failed") and finished_at:
                    lag.append(max(0.0, (event[2] + wall_minus_mono - finished_at) * 1000))
    return first, lag


def judge_slo(evidence: Evidence, slo: dict[str, Any]) -> list[Check]:
    checks: list[Check] = []
    outcomes: dict[str, int] = defaultdict(int)
    server_errors = 0
    for record in evidence.of("req"):
        outcomes[record["outcome"]] += 1
        server_errors += (record["status"] or 0) >= 500
    budgets = slo["errors"]
    for name, measured in (
        ("server_errors", server_errors),
        ("connection_errors", outcomes["connection"]),
        ("timeouts", outcomes["timeout"]),
    ):
        limit = float(budgets.get(name, 0))
        checks.append(Check(name, "errors", measured, limit, measured <= limit))
    posts = [r for r in evidence.of("req") if r["name"] == "POST /api/tts" and r["status"]]
    refused = sum(1 for r in posts if r["status"] == 429)
    share = refused / len(posts) if posts else None
    limit = float(budgets.get("max_refused_share", 1.0))
    checks.append(
        Check("refused_share", "errors", share, limit, None if share is None else share <= limit)
    )
    stats = endpoint_stats(evidence.records)
    for name, limit in slo["latency_p99_ms"].items():
        entry = stats.get(name)
        p99 = percentile(entry.latencies_ms, 99) if entry else None
        held = None if p99 is None else p99 <= limit
        checks.append(Check(f"p99 {name}", "latency", _round(p99), float(limit), held))
    first, lag = sse_timings(evidence)
    for name, values in (("first_event_p99_ms", first), ("delivery_lag_p99_ms", lag)):
        level = percentile(values, 99)
        bound = float(slo["sse"][name])
        checks.append(
            Check(
                f"sse {name}",
                "sse",
                _round(level),
                bound,
                None if level is None else level <= bound,
            )
        )
    checks.extend(generator_checks(evidence, slo))
    return checks


def generator_checks(evidence: Evidence, slo: dict[str, Any]) -> list[Check]:
    lags = [r["ms"] for r in evidence.of("lag")]
    lag_p99 = percentile(lags, 99)
    lag_limit = float(slo["generator"]["max_lag_p99_ms"])
    warnings = len(evidence.of("cpu"))
    cpu_limit = float(slo["generator"]["max_cpu_warnings"])
    return [
        Check(
            "generator lag p99 ms",
            "generator",
            _round(lag_p99),
            lag_limit,
            None if lag_p99 is None else lag_p99 <= lag_limit,
        ),
        Check("generator cpu warnings", "generator", warnings, cpu_limit, warnings <= cpu_limit),
    ]
