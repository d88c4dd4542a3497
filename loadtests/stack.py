"""The system under load: a Redis (for Redis mode) and one or more gunicorn instances.

Both come from taskmon.harness: Redis found or started as the tests find it (an external
TASKMON_TEST_REDIS_URL, a container, or a local redis-server binary), each instance a real
`gunicorn -w N` on a free port. Every process is stopped, as a process group, on every path.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from taskmon.harness.redis_server import RedisServer
from taskmon.harness.stack import GunicornInstance


@dataclass(frozen=True)
class StackOptions:
    instances: int = 1
    workers: int = 4
    limit: int = 4
    engine: str = "tone"
    backend: str = "redis"
    tone_ms_per_char: int = 10


def instance_env(
    options: StackOptions, journal_dir: Path, redis_url: str | None, prefix: str
) -> dict[str, str]:
    """The TASKMON_ settings every instance of the run shares."""
    env = {
        "TASKMON_BACKEND": options.backend,
        "TASKMON_CONCURRENCY_LIMIT": str(options.limit),
        "TASKMON_ENGINE": options.engine,
        "TASKMON_TONE_MS_PER_CHAR": str(options.tone_ms_per_char),
        "TASKMON_JOURNAL_DIR": str(journal_dir),
        "TASKMON_WORKERS": str(options.instances * options.workers),
        "TASKMON_KEY_PREFIX": prefix,
    }
    if redis_url:
        env["TASKMON_REDIS_URL"] = redis_url
    return env


@contextlib.contextmanager
def running_stack(options: StackOptions, workdir: Path) -> Iterator[list[GunicornInstance]]:
    """Start Redis (Redis mode only) and the instances; yield them; stop all on the way out."""
    journal_dir = workdir / "journal"
    journal_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        redis_url = None
        if options.backend == "redis":
            redis = stack.enter_context(RedisServer(workdir=workdir / "redis"))
            redis_url = redis.url
        # A prefix of its own, so a run against a shared Redis never reads another's keys.
        env = instance_env(options, journal_dir, redis_url, f"loadtest-{uuid.uuid4().hex[:8]}")
        instances = []
        for number in range(options.instances):
            instance = GunicornInstance(
                workers=options.workers, env=env, workdir=workdir / f"instance-{number + 1}"
            )
            instances.append(stack.enter_context(instance))
        yield instances
