"""Suite-wide: one real Redis per session, and a leak fails the test that leaked it.

Warnings are errors (pyproject), and an unclosed socket raises its ResourceWarning only when
the garbage collector reaches it, which may be in any later test. Collecting after each test
pins the warning on the test that left the object behind.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from taskmon.harness.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Started on first use. Tests keep apart through their own key namespace (Keys prefix);
    a state machine makes one per example, since a test's fixture is shared by its examples.
    """
    with RedisServer(workdir=tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    # In the test's own teardown: pytest looks for unraisable exceptions at the end of the
    # teardown phase, so a leak collected here is reported on this test. What lived before the
    # test is frozen first (it was collected at the last teardown), so the collection scans
    # only what this test made: a full collection of the whole heap cost 0.1 s a test.
    gc.freeze()
    yield
    gc.collect()
