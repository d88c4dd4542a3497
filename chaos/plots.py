"""One PNG per scenario run: syntheses in flight (journals) against the limit and the policy's
bound, workers degraded (the watcher), and calls per second by answer, with every fault window
shaded. Times are seconds into the load.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on CI machines
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from chaos.concurrency import series
from chaos.evidence import ChaosEvidence
from chaos.switching import fault_regions

BIN_S = 1.0


def _shade(axes: list[Axes], evidence: ChaosEvidence) -> None:
    t0 = evidence.load_start
    for number, window in enumerate(evidence.windows):
        end = window.end if window.end is not None else window.start
        for ax in axes:
            ax.axvspan(
                window.start - t0,
                max(end, window.start + 0.2) - t0,
                color="tab:red",
                alpha=0.15,
                label="fault" if number == 0 and ax is axes[0] else None,
            )


def plot_scenario(evidence: ChaosEvidence, out: Path) -> list[str]:
    t0 = evidence.load_start
    fig, (flight_ax, mode_ax, calls_ax) = plt.subplots(
        3, 1, figsize=(11, 8), sharex=True, height_ratios=(3, 1, 2)
    )
    title = f"{evidence.scenario.name} ({evidence.policy}): {evidence.scenario.summary}"
    fig.suptitle(title, fontsize=10)
    if any(evidence.journal_dir.glob("journal-*.jsonl")):
        flight = series(evidence.journal_dir, evidence.deaths)
        times = [t - t0 for t, _ in flight.steps]
        flight_ax.step(times, [n for _, n in flight.steps], where="post", lw=1,
                       label="syntheses in flight (journals)")  # fmt: skip
    flight_ax.axhline(evidence.limit, color="black", ls="--", lw=1, label="limit")
    for number, (start, end, bound, _) in enumerate(fault_regions(evidence)):
        flight_ax.hlines(bound, start - t0, end - t0, color="tab:orange", lw=2,
                         label="policy's bound" if number == 0 else None)  # fmt: skip
    flight_ax.set_ylabel("in flight")
    flight_ax.legend(loc="upper right", fontsize=8)

    latest: dict[str, bool] = {}
    mode_t, mode_n = [], []
    for look in evidence.looks:
        if look.status == 200 and look.degraded is not None:
            latest[look.worker] = look.degraded
            mode_t.append(look.t - t0)
            mode_n.append(sum(latest.values()))
    mode_ax.step(mode_t, mode_n, where="post", color="tab:purple", lw=1)
    mode_ax.set_ylabel("degraded\nworkers")

    bins: dict[str, Counter[int]] = {"ok": Counter(), "degraded answer": Counter(),
                                     "failed": Counter()}  # fmt: skip
    for record in evidence.records:
        if record["k"] != "req":
            continue
        status, outcome = record.get("status") or 0, record.get("outcome")
        kind = "ok" if outcome == "ok" and status < 400 else "degraded answer"
        if status >= 500 or outcome in ("timeout", "connection"):
            kind = "failed"
        bins[kind][int((record["t"] - t0) // BIN_S)] += 1
    colors = {"ok": "tab:green", "degraded answer": "tab:blue", "failed": "tab:red"}
    for kind, counted in bins.items():
        if counted:
            xs = sorted(counted)
            calls_ax.plot([x * BIN_S for x in xs], [counted[x] / BIN_S for x in xs],
                          color=colors[kind], lw=1, label=kind)  # fmt: skip
    calls_ax.set_ylabel("calls / s")
    calls_ax.set_xlabel("seconds into the load")
    calls_ax.legend(loc="upper right", fontsize=8)
    _shade([flight_ax, mode_ax, calls_ax], evidence)
    path = out / "in-flight.png"
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path.name]
