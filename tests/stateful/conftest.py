"""A real redis-server for the state-machine tests, started once per session.

Each example of a machine makes its own Keys namespace (in the machine's __init__), so examples
never see each other's keys; a per-test `keys` fixture would be shared by every example.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskmon.harness.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(workdir=tmp_path_factory.mktemp("redis")) as server:
        yield server
