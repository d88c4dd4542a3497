"""A worker's share of the global cap while Redis is away: pure arithmetic, no I/O.

Google's Doorman calls it safe capacity: without the coordinator, the cap survives only if each
client takes at most its share. taskmon's share is `limit // workers`, and the remainder goes to
the lowest indexes, so the shares of workers 0..workers-1 add up to the limit exactly.
"""

from __future__ import annotations


def fallback_share(limit: int, workers: int, index: int) -> int:
    """The permits worker `index` (0-based) of `workers` may grant itself while degraded.

    An index at or past `workers` (more workers alive than TASKMON_WORKERS says) gets 0, so
    the shares never add up to more than the limit. Raises ValueError for a limit or a number
    of workers below 1, or a negative index.
    """
    if limit < 1 or workers < 1 or index < 0:
        raise ValueError("limit and workers must be at least 1, index at least 0")
    if index >= workers:
        return 0
    return limit // workers + (1 if index < limit % workers else 0)


def rank_of(worker_id: str, alive: list[str]) -> int | None:
    """This worker's index among the live workers (sorted by id), the same on every worker
    that reads the same registry; None when it is not listed (yet)."""
    ordered = sorted(set(alive))
    return ordered.index(worker_id) if worker_id in ordered else None
