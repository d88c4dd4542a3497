"""Real `gunicorn -w 4` stacks for the end-to-end tests, started once per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskmon.harness.stack import GunicornInstance
from tests.support.http import PinnedClient

MEMORY_ENV = {
    "TASKMON_BACKEND": "memory",
    "TASKMON_ENGINE": "tone",
    "TASKMON_TONE_MS_PER_CHAR": "5",
    "TASKMON_SSE_KEEPALIVE_S": "1",
    "TASKMON_CONCURRENCY_LIMIT": "2",
}


@pytest.fixture(scope="module")
def memory_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornInstance]:
    with GunicornInstance(
        workers=4, env=MEMORY_ENV, workdir=tmp_path_factory.mktemp("memory-stack")
    ) as stack:
        yield stack


@pytest.fixture
def pinned(memory_stack: GunicornInstance) -> Iterator[PinnedClient]:
    client = PinnedClient(memory_stack.base_url)
    try:
        yield client
    finally:
        client.close()
