"""A scenario's stack: one redis-server, the fault proxy with one proxy per instance in front
of it, and `gunicorn -w N` instances whose TASKMON_REDIS_URL points at their own proxy (so a
fault can reach one instance and spare the other); for the HTTP faults, one more proxy in
front of the first instance's HTTP port. Everything stops on every path.
"""

from __future__ import annotations

import contextlib
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from loadtests.stack import StackOptions, instance_env

from chaos.proxy_control import FaultProxyControl, running_fault_proxy
from chaos.scenarios import LEASE_TTL_MS, LIMIT, WORKERS, Scenario
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.stack import GunicornInstance


@dataclass
class ChaosStack:
    redis: RedisServer
    proxies: FaultProxyControl
    proxy_names: list[str]  # one per instance, in instance order
    instances: list[GunicornInstance]
    backend: str
    front_proxy: str | None = None  # the proxy in front of the first instance's HTTP port
    front: str | None = None  # its URL

    @property
    def bases(self) -> list[str]:
        return [instance.base_url for instance in self.instances]

    @property
    def all_proxies(self) -> list[str]:
        return [*self.proxy_names, *([self.front_proxy] if self.front_proxy else [])]


def service_settings(policy: str, overrides: list[str]) -> dict[str, str]:
    """The TASKMON_ settings of every scenario, then the user's NAME=VALUE overrides."""
    settings = {
        "TASKMON_FALLBACK_POLICY": policy,
        "TASKMON_LEASE_TTL_MS": str(LEASE_TTL_MS),
        "TASKMON_SSE_KEEPALIVE_S": "1",
        # A short queue per worker: the permits stay busy, yet the queue drains soon after.
        "TASKMON_MAX_PENDING": "12",
    }
    for item in overrides:
        name, _, value = item.partition("=")
        settings[name] = value
    return settings


def through(redis_url: str, port: int) -> str:
    """`redis_url` with its host and port replaced by the proxy's."""
    parts = urllib.parse.urlsplit(redis_url)
    auth = f"{parts.username or ''}:{parts.password}@" if parts.password else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{port}"))


@contextlib.contextmanager
def running_chaos_stack(
    scenario: Scenario,
    settings: dict[str, str],
    workdir: Path,
    journal_dir: Path,
    *,
    proxy: str = "auto",
) -> Iterator[ChaosStack]:
    backend = settings.get("TASKMON_BACKEND", "redis")
    options = StackOptions(
        instances=scenario.instances,
        workers=WORKERS // scenario.instances,
        limit=LIMIT,
        engine=scenario.engine,
        backend=backend,
    )
    journal_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer(workdir=workdir / "redis"))
        proxies = stack.enter_context(running_fault_proxy(workdir, choose=proxy))
        prefix = f"chaos-{uuid.uuid4().hex[:8]}"
        names, instances = [], []
        for number in range(scenario.instances):
            name = f"redis_{number + 1}"
            port = proxies.create(name, f"{redis.host}:{redis.port}")
            names.append(name)
            env = instance_env(options, journal_dir, through(redis.url, port), prefix) | settings
            if backend == "memory":
                env.pop("TASKMON_REDIS_URL", None)
            instance = GunicornInstance(
                workers=options.workers, env=env, workdir=workdir / f"instance-{number + 1}"
            )
            instances.append(stack.enter_context(instance))
        chaos_stack = ChaosStack(redis, proxies, names, instances, backend)
        if scenario.http_front:
            chaos_stack.front_proxy = "service_1"
            port = proxies.create("service_1", f"127.0.0.1:{instances[0].port}")
            chaos_stack.front = f"http://127.0.0.1:{port}"
        yield chaos_stack
