"""Suite-wide: a leaked socket or file fails the test that leaked it, not a later one.

Warnings are errors (pyproject), and an unclosed socket raises its ResourceWarning only when
the garbage collector reaches it, which may be in any later test. Collecting after each test
pins the warning on the test that left the object behind.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    del item, nextitem
    yield
    gc.collect()
