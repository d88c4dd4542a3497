"""The partition policy's arithmetic: shares add up to the limit, the remainder goes low."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskmon.failover import fallback_share, rank_of


@pytest.mark.parametrize(
    ("limit", "workers", "shares"),
    [(4, 4, [1, 1, 1, 1]), (5, 2, [3, 2]), (10, 4, [3, 3, 2, 2]), (2, 4, [1, 1, 0, 0])],
)
def test_shares(limit: int, workers: int, shares: list[int]) -> None:
    assert [fallback_share(limit, workers, i) for i in range(workers)] == shares


@given(st.integers(1, 10_000), st.integers(1, 500))
def test_shares_add_up_to_the_limit_and_differ_by_one_at_most(limit: int, workers: int) -> None:
    shares = [fallback_share(limit, workers, i) for i in range(workers)]
    assert sum(shares) == limit
    assert max(shares) - min(shares) <= 1
    assert shares == sorted(shares, reverse=True), "the remainder goes to the lowest indexes"


def test_an_index_past_the_workers_gets_nothing() -> None:
    """More workers alive than TASKMON_WORKERS says: the extra ones take no share."""
    assert fallback_share(4, 4, 4) == 0


@pytest.mark.parametrize(("limit", "workers", "index"), [(0, 1, 0), (1, 0, 0), (1, 1, -1)])
def test_nonsense_is_refused(limit: int, workers: int, index: int) -> None:
    with pytest.raises(ValueError, match="at least"):
        fallback_share(limit, workers, index)


def test_rank_is_the_same_on_every_worker_that_reads_the_same_registry() -> None:
    alive = ["h2:10", "h1:30", "h1:20"]
    assert [rank_of(w, alive) for w in ("h1:20", "h1:30", "h2:10")] == [0, 1, 2]
    assert rank_of("h1:20", list(reversed(alive))) == 0
    assert rank_of("h9:1", alive) is None
