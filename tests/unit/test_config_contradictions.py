"""Settings that are each valid but contradict one another are refused at start-up, by name.

Every configuration the project runs itself (defaults, the e2e stacks, the failover rig, chaos)
must still pass: a rule that refused one of them would be a rule about taste, not a
contradiction.
"""

from __future__ import annotations

import pytest
from chaos.scenarios import LEASE_TTL_MS as CHAOS_LEASE_TTL_MS

from taskmon.config import ConfigError, load_settings

pytestmark = pytest.mark.usefixtures("clean_taskmon_env")

REDIS = {"redis_url": "redis://:s3cret-pw@127.0.0.1:6379/0"}


def refusal(**overrides: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides)
    message = str(caught.value)
    assert "s3cret-pw" not in message, "a cross-setting rule must not print the settings"
    assert "TASKMON_SETTINGS" not in message
    return message


@pytest.mark.parametrize("backend", ["memory", "auto", "redis"])
def test_the_defaults_contradict_nothing(backend: str) -> None:
    load_settings({"backend": backend, **REDIS})
    if backend != "redis":
        load_settings({"backend": backend})


def test_a_task_ttl_shorter_than_a_wait_and_a_run_is_refused() -> None:
    """The Idempotency-Key is kept TASK_TTL_S from creation: it must outlive the task."""
    message = refusal(task_ttl_s=400)  # defaults: 300 s permit wait + 120 s synthesis
    assert "TASKMON_TASK_TTL_S=400" in message
    assert "TASKMON_PERMIT_TIMEOUT_S=300" in message
    assert "TASKMON_ENGINE_TIMEOUT_S=120" in message
    assert "Idempotency-Key" in message
    assert "at least 420" in message
    load_settings({"task_ttl_s": 420})
    load_settings({"task_ttl_s": 60, "permit_timeout_s": 30, "engine_timeout_s": 30})


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_the_task_ttl_rule_holds_on_every_backend(backend: str) -> None:
    """The in-memory monitor keeps its keys the same way."""
    message = refusal(backend=backend, task_ttl_s=100, engine_timeout_s=200, **REDIS)
    assert "TASKMON_ENGINE_TIMEOUT_S=200" in message


def test_a_task_ttl_shorter_than_two_leases_is_refused_when_redis_is_used() -> None:
    """The registry keeps a dead worker listed for TASK_TTL_S: the reapers must see it."""
    quick = {"permit_timeout_s": 10, "engine_timeout_s": 10}
    message = refusal(task_ttl_s=100, lease_ttl_ms=60_000, **quick, **REDIS)
    assert "TASKMON_TASK_TTL_S=100" in message
    assert "TASKMON_LEASE_TTL_MS=60000" in message
    assert "at least 120" in message
    load_settings({"task_ttl_s": 120, "lease_ttl_ms": 60_000, **quick, **REDIS})
    # Memory mode has no registry: the pair cannot contradict there.
    load_settings({"backend": "memory", "task_ttl_s": 100, "lease_ttl_ms": 60_000, **quick})


def test_a_lease_that_a_retried_call_outlasts_is_refused_when_redis_is_used() -> None:
    """Renewed every third of it: a call the client rides out must land in the rest."""
    message = refusal(lease_ttl_ms=599, **REDIS)  # 1 retry of 0.3 s + 0.1 s: 0.6 s
    assert "TASKMON_LEASE_TTL_MS=599" in message
    assert "TASKMON_REDIS_RETRIES=1" in message
    assert "TASKMON_REDIS_SOCKET_TIMEOUT_S=0.3" in message
    assert "at least 600" in message
    load_settings({"lease_ttl_ms": 600, **REDIS})
    message = refusal(lease_ttl_ms=10_000, redis_retries=3, redis_socket_timeout_s=2.5, **REDIS)
    assert "at least 11700" in message
    load_settings({"lease_ttl_ms": 100, "redis_retries": 0, **REDIS})  # nothing to ride out


@pytest.mark.parametrize("backend", ["memory", "auto"])
def test_redis_only_settings_contradict_nothing_without_redis(backend: str) -> None:
    """Memory mode (and auto without a URL) never runs the Redis calls the rule is about."""
    load_settings(
        {"backend": backend, "lease_ttl_ms": 100, "redis_retries": 10, "redis_socket_timeout_s": 30}
    )


def test_every_contradiction_is_named_at_once() -> None:
    message = refusal(task_ttl_s=10, lease_ttl_ms=100_000, redis_retries=2, **REDIS)
    assert message.count("TASKMON_TASK_TTL_S=10 ") == 2
    assert "TASKMON_LEASE_TTL_MS=100000" in message
    assert "TASKMON_REDIS_RETRIES" not in message, "a 100 s lease rides out 2 retries"
    assert message.startswith("invalid configuration: ")


def test_a_field_error_is_reported_alone_before_any_cross_rule() -> None:
    message = refusal(task_ttl_s=10, concurrency_limit=0)
    assert "TASKMON_CONCURRENCY_LIMIT=0" in message


@pytest.mark.parametrize(
    "lease_ttl_ms",
    [
        600,  # tests/integration/test_failover.py, test_failover_settle.py (short heartbeats)
        1000,  # tests/e2e/test_kill_overlap.py, test_lease_loss.py, test_failover.py
        1500,  # the failover rig (test_failover_partition.py, test_failover_settle.py)
        2000,  # tests/e2e redis stacks, chaos
        3000,  # tests/e2e/test_redis_invariants.py
        60_000,  # tests/integration/test_failover_web.py
        CHAOS_LEASE_TTL_MS,
    ],
)
def test_every_configuration_the_project_runs_passes(lease_ttl_ms: int) -> None:
    load_settings({"backend": "redis", "lease_ttl_ms": lease_ttl_ms, **REDIS})
    load_settings({"backend": "memory", "lease_ttl_ms": lease_ttl_ms})
