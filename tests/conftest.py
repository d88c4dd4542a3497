"""Suite-wide: one real Redis per session, and a leak fails the test that leaked it.

Warnings are errors (pyproject), and an unclosed socket raises its ResourceWarning only when
the garbage collector reaches it, which may be in any later test. Collecting after each test
pins the warning on the test that left the object behind.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import pytest

from taskmon.harness.redis_server import RedisServer

# The `browser` and `watched_page` fixtures (a real chromium, for the page tests).
pytest_plugins = ["tests.support.browser"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Started on first use. Tests keep apart through their own key namespace (Keys prefix);
    a state machine makes one per example, since a test's fixture is shared by its examples.
    """
    with RedisServer(workdir=tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(autouse=True, scope="session")
def _unfreeze_at_the_end() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.collect()  # what the tests froze gets its finalizers (and its warnings) now


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    # In the test's own teardown: pytest looks for unraisable exceptions at the end of the
    # teardown phase, so a leak collected here is reported on this test. Before the test, what
    # the last one left is collected (its fixture values were still alive at its teardown; a
    # leak of theirs is reported here, one test late, as before) and what lives on is frozen,
    # so later collections scan only newer objects: collecting the whole heap after every
    # test cost 0.1 s a test.
    gc.collect()
    gc.freeze()
    yield
    gc.collect()


@pytest.fixture
def clean_taskmon_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TASKMON_ variable at all, so settings come from the test alone (not the shell's)."""
    for name in list(os.environ):
        if name.upper().startswith("TASKMON_"):
            monkeypatch.delenv(name)
