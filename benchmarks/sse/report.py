"""The SSE table: streams served at once, Redis connections, delivery latency."""

from __future__ import annotations

from typing import Any


def render(result: dict[str, Any]) -> str:
    lines = [
        f"-- SSE at scale: {result['streams']} streams at once, gunicorn -w {result['workers']} "
        f"gthread, {result['threads']} threads per worker",
        f"  {'stack':<10}{'served':>8}{'open s':>8}{'redis conns':>13}{'sub':>5}{'pool':>6}"
        f"{'events':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}",
    ]
    for name in ("taskmon", "flask-sse"):
        row = result.get(name)
        if row is None:
            continue
        conns = row.get("connections_peak", row["connections_with_streams_open"])
        total = sum(conns.values())
        delivery = {k: row["delivery"].get(k, float("nan")) for k in ("p50_ms", "p99_ms", "max_ms")}
        lines.append(
            f"  {name:<10}{row['served_at_once']:>8}{row['open_s']:>8.1f}{total:>13}"
            f"{conns.get('subscriber', 0):>5}{conns.get('pool', 0):>6}{row['events']:>8}"
            f"{delivery['p50_ms']:>8.1f}{delivery['p99_ms']:>8.1f}{delivery['max_ms']:>8.1f}"
        )
    mine = result.get("taskmon", {})
    if mine:
        lines.append(
            f"  taskmon: {mine['ended_done']} of {mine['streams']} streams ended on done; "
            f"events by kind {mine.get('event_kinds', {})}"
        )
    if mine.get("per_worker"):
        lines.append(f"  taskmon streams per worker: {sorted(mine['per_worker'].values())}")
    for name in ("taskmon", "flask-sse"):
        errors = result.get(name, {}).get("errors")
        if errors:
            lines.append(f"  {name} stream errors: {dict(errors)}")
    return "\n".join(lines)
