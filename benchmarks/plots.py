"""The plots of a bench run: pairs per second per peer, and handoff latency distributions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on CI machines
import matplotlib.pyplot as plt

_BARS = (
    ("sem_1_ops_s", "1 client"),
    ("sem_n_ops_s", "8 processes, uncontended"),
    ("sem_nc_ops_s", "8 processes, limit 2"),
)


def plot_all(results: dict[str, Any], out: Path) -> list[str]:
    """Write every plot the results allow; the file names written."""
    sem = results.get("semaphore")
    if sem is None:
        return []
    return [plot_pairs(sem, out / "pairs.png"), plot_handoffs(sem, out / "handoff.png")]


def plot_pairs(sem: dict[str, Any], path: Path) -> str:
    peers: dict[str, dict[str, float | None]] = sem["peers"]
    names = list(peers)
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / len(_BARS)
    for number, (key, label) in enumerate(_BARS):
        values = [peers[name].get(key) for name in names]
        heights = [0.0 if v is None or math.isnan(v) else v for v in values]
        xs = [i + number * width for i in range(len(names))]
        ax.bar(xs, heights, width, label=label)
    baseline = sem["summary"].get("evalsha_1.ops_s", {}).get("median")
    if baseline:
        ax.axhline(baseline / 2, color="black", ls="--", lw=1,
                   label="two EVALSHA round trips, 1 client")  # fmt: skip
    ax.set_xticks([i + width for i in range(len(names))], names, rotation=20, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("acquire+release pairs/s (log)")
    ax.set_title("acquire+release pairs per second (medians over rounds; no bar: n/a)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_handoffs(sem: dict[str, Any], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(11, 5))
    for name, found in sem["handoffs"].items():
        ms = sorted(h["ns"] / 1e6 for h in found)
        if ms:
            ax.step(ms, [(i + 1) / len(ms) for i in range(len(ms))], where="post", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("release -> waiter granted (ms, log)")
    ax.set_ylabel("fraction of handoffs")
    ax.set_title("handoff latency, cumulative distribution (a waiter in another process)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
