"""The report's PNG plots (matplotlib, no display): in flight against the limit, queue depth,
latency percentiles per time window.

Times are seconds into the load. Percentiles are computed per window (WINDOW_S) from every
recorded call, never cumulatively, so a bad minute shows as a bad minute.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on CI machines
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from loadtests.evidence import Evidence
from loadtests.slo import percentile
from taskmon.harness.journal_check import read_events

WINDOW_S = 5.0
Shade = tuple[float, float, str]  # (from s, to s, label): a phase of a rehearsal


def in_flight_series(evidence: Evidence) -> tuple[list[float], list[int], str]:
    """(seconds, syntheses running, source): from the journals, else sampled permits."""
    if evidence.journal_dir is not None and any(evidence.journal_dir.glob("journal-*.jsonl")):
        events, _ = read_events(evidence.journal_dir)
        events.sort(key=lambda e: (e[0], e[1]))
        times, counts, running = [], [], 0
        for stamp, delta, _ in events:
            running += delta
            times.append(stamp / 1e9 - evidence.started_at)
            counts.append(running)
        return times, counts, "synthesis journals"
    samples = [s for s in evidence.samples if s.holders is not None]
    return (
        [s.t - evidence.started_at for s in samples],
        [s.holders or 0 for s in samples],
        "sampled /api/monitor/permits",
    )


def _figure(shades: Sequence[Shade]) -> tuple[Figure, Axes]:
    # Shaded phases get their legend below the plot, where it hides no data.
    figure, axes = plt.subplots(figsize=(9, 3.5 + 0.22 * len(shades)))
    for number, (start, end, label) in enumerate(shades):
        axes.axvspan(start, end, alpha=0.12, color=f"C{number % 10}", label=label)
    return figure, axes


def _legend(
    axes: Axes, shades: Sequence[Shade], loc: Literal["upper right", "upper left"] = "upper right"
) -> None:
    if shades:
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize="small")
    else:
        axes.legend(loc=loc, fontsize="small")


def plot_in_flight(evidence: Evidence, path: Path, shades: Sequence[Shade] = ()) -> None:
    times, counts, source = in_flight_series(evidence)
    figure, axes = _figure(shades)
    axes.step(times, counts, where="post", label=f"in flight ({source})", color="C0")
    axes.axhline(evidence.limit, color="C3", linestyle="--", label=f"limit {evidence.limit}")
    axes.set(xlabel="seconds into the run", ylabel="syntheses", title="Syntheses in flight")
    _legend(axes, shades)
    _save(figure, path)


def plot_queue(evidence: Evidence, path: Path, shades: Sequence[Shade] = ()) -> None:
    figure, axes = _figure(shades)
    by_instance: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for sample in evidence.samples:
        by_instance[sample.instance].append((sample.t - evidence.started_at, sample.queued))
    for instance, points in sorted(by_instance.items()):
        axes.plot(*zip(*points, strict=True), label=f"queued, as {instance} reports", lw=1)
    axes.set(xlabel="seconds into the run", ylabel="tasks", title="Queue depth (tasks queued)")
    if by_instance or shades:
        _legend(axes, shades)
    _save(figure, path)


def latency_windows(
    evidence: Evidence,
) -> tuple[list[float], dict[int, list[float | None]], list[float]]:
    """(window midpoints, percentile -> ms per window, requests per second per window)."""
    windows: dict[int, list[float]] = defaultdict(list)
    for record in evidence.of("req"):
        if record["status"] is not None:
            windows[int((record["t"] - evidence.started_at) // WINDOW_S)].append(record["ms"])
    if not windows:
        return [], {}, []
    indexes = range(min(windows), max(windows) + 1)
    mids = [(i + 0.5) * WINDOW_S for i in indexes]
    series = {p: [percentile(windows.get(i, []), p) for i in indexes] for p in (50, 95, 99)}
    rps = [len(windows.get(i, [])) / WINDOW_S for i in indexes]
    return mids, series, rps


def plot_latency(evidence: Evidence, path: Path, shades: Sequence[Shade] = ()) -> None:
    mids, series, rps = latency_windows(evidence)
    figure, axes = _figure(shades)
    for p, values in series.items():
        axes.plot(mids, [v if v is not None else float("nan") for v in values], label=f"p{p}")
    axes.set(
        xlabel="seconds into the run",
        ylabel="ms",
        title=f"Latency per {WINDOW_S:g} s window (all calls but streams)",
    )
    twin = axes.twinx()
    twin.bar(mids, rps, width=WINDOW_S * 0.8, alpha=0.15, color="grey", label="requests/s")
    twin.set_ylabel("requests/s")
    axes.set_zorder(twin.get_zorder() + 1)
    axes.patch.set_visible(False)
    _legend(axes, shades, loc="upper left")
    _save(figure, path)


def _save(figure: Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_all(evidence: Evidence, directory: Path, shades: Sequence[Shade] = ()) -> list[str]:
    """Write every plot into `directory`; the file names written."""
    plots = {
        "in_flight.png": plot_in_flight,
        "queue_depth.png": plot_queue,
        "latency.png": plot_latency,
    }
    for name, draw in plots.items():
        draw(evidence, directory / name, shades)
    return list(plots)
