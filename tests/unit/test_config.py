"""Settings: defaults, TASKMON_ environment variables, overrides and the errors an operator sees."""

from __future__ import annotations

import shutil
import traceback
from pathlib import Path

import pytest

from taskmon.config import (
    BackendMode,
    ConfigError,
    EngineName,
    FallbackPolicy,
    Settings,
    load_settings,
)

pytestmark = pytest.mark.usefixtures("clean_taskmon_env")


def config_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return str(caught.value)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.redis_url is None
    assert settings.backend is BackendMode.AUTO
    assert settings.concurrency_limit == 4
    assert settings.lease_ttl_ms == 10_000
    assert settings.lease_ttl_s == 10.0
    assert settings.tone_ms_per_char == 10.0
    assert settings.max_pending == 64
    assert settings.task_ttl_s == 86_400
    assert settings.key_prefix == "taskmon"
    assert settings.workers is None
    assert settings.worker_index is None
    assert settings.fallback_policy is FallbackPolicy.PARTITION
    assert settings.journal_dir is None
    assert settings.admin_token is None
    assert settings.permit_timeout_s == 300.0
    assert settings.sse_keepalive_s == 15.0
    assert settings.engine_timeout_s == 120.0
    assert settings.max_body_bytes == 64 * 1024
    assert isinstance(settings.result_dir, Path)
    expected_engine = EngineName.ESPEAK if shutil.which("espeak-ng") else EngineName.TONE
    assert settings.engine is expected_engine


def test_default_engine_is_tone_without_espeak(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no espeak-ng on PATH
    assert load_settings().engine is EngineName.TONE


def test_default_result_dir_follows_xdg_data_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert load_settings().result_dir == tmp_path / "data" / "taskmon" / "results"


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "TASKMON_REDIS_URL": "redis://localhost:6379/2",
        "TASKMON_BACKEND": "memory",
        "TASKMON_CONCURRENCY_LIMIT": "7",
        "TASKMON_LEASE_TTL_MS": "2500",
        "TASKMON_ENGINE": "tone",
        "TASKMON_TONE_MS_PER_CHAR": "2.5",
        "TASKMON_RESULT_DIR": str(tmp_path / "out"),
        "TASKMON_MAX_PENDING": "9",
        "TASKMON_TASK_TTL_S": "60",
        "TASKMON_PERMIT_TIMEOUT_S": "30",
        "TASKMON_ENGINE_TIMEOUT_S": "20",
        "TASKMON_KEY_PREFIX": "tm:test",
        "TASKMON_WORKERS": "3",
        "TASKMON_FALLBACK_POLICY": "reject",
        "TASKMON_ADMIN_TOKEN": "t0ken-of-sixteen-chars",
        "TASKMON_SSE_KEEPALIVE_S": "0.5",
        "TASKMON_MAX_BODY_BYTES": "2048",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://localhost:6379/2"
    assert settings.backend is BackendMode.MEMORY
    assert settings.concurrency_limit == 7
    assert settings.lease_ttl_s == 2.5
    assert settings.engine is EngineName.TONE
    assert settings.tone_ms_per_char == 2.5
    assert settings.result_dir == tmp_path / "out"
    assert settings.max_pending == 9
    assert settings.task_ttl_s == 60
    assert (settings.permit_timeout_s, settings.engine_timeout_s) == (30, 20)
    assert settings.key_prefix == "tm:test"
    assert settings.workers == 3
    assert settings.fallback_policy is FallbackPolicy.REJECT
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "t0ken-of-sixteen-chars"
    assert settings.sse_keepalive_s == 0.5
    assert settings.max_body_bytes == 2048


def test_variables_without_the_prefix_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCURRENCY_LIMIT", "9")
    monkeypatch.setenv("BACKEND", "bogus")
    settings = load_settings()
    assert settings.concurrency_limit == 4
    assert settings.backend is BackendMode.AUTO


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TASKMON_CONCURRENCY_LIMIT", "0"),
        ("TASKMON_CONCURRENCY_LIMIT", "abc"),
        ("TASKMON_CONCURRENCY_LIMIT", "10001"),
        ("TASKMON_BACKEND", "bogus"),
        ("TASKMON_ENGINE", "festival"),
        ("TASKMON_LEASE_TTL_MS", "99"),
        ("TASKMON_TONE_MS_PER_CHAR", "-1"),
        ("TASKMON_MAX_PENDING", "0"),
        ("TASKMON_TASK_TTL_S", "0"),
        ("TASKMON_KEY_PREFIX", "has space"),
        ("TASKMON_FALLBACK_POLICY", "maybe"),
        ("TASKMON_PERMIT_TIMEOUT_S", "0"),
        ("TASKMON_SSE_KEEPALIVE_S", "16"),
        ("TASKMON_MAX_BODY_BYTES", "10"),
        ("TASKMON_WORKER_INDEX", "-1"),
    ],
)
def test_bad_value_names_the_variable_and_the_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    message = config_error(monkeypatch, **{variable: value})
    assert f"{variable}=" in message
    assert repr(value) in message


@pytest.mark.parametrize(
    "url", ["http://x", "redis:/x", "localhost:6379", "REDIS//host", "https://user:pw@host"]
)
def test_redis_url_must_have_a_redis_scheme(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    message = config_error(monkeypatch, TASKMON_REDIS_URL=url)
    assert "TASKMON_REDIS_URL" in message
    assert "redis://" in message, "the message states the rule"


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://h", "unix:///run/redis.sock"])
def test_redis_url_accepted_schemes(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("TASKMON_REDIS_URL", url)
    redis_url = load_settings().redis_url
    assert redis_url is not None
    assert redis_url.get_secret_value() == url


def test_redis_password_never_appears_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    hidden = "hunter2-s3cr3t"
    monkeypatch.setenv("TASKMON_REDIS_URL", f"http://admin:{hidden}@cache.internal:6379/0")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "TASKMON_REDIS_URL" in message
    assert hidden not in message
    assert "admin:" not in message
    # Not in what a crashing start-up would print either (the cause chain is suppressed).
    printed = "".join(traceback.format_exception(caught.value))
    assert hidden not in printed


def test_redis_password_not_in_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKMON_REDIS_URL", "redis://:hunter2@cache:6379/0")
    monkeypatch.setenv("TASKMON_ADMIN_TOKEN", "adm1n-t0ken-not-in-repr")
    settings = load_settings()
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings)
    assert "adm1n-t0ken-not-in-repr" not in repr(settings)


def test_every_offending_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(
        monkeypatch, TASKMON_CONCURRENCY_LIMIT="0", TASKMON_BACKEND="bogus", TASKMON_MAX_PENDING="x"
    )
    for variable in ("TASKMON_CONCURRENCY_LIMIT", "TASKMON_BACKEND", "TASKMON_MAX_PENDING"):
        assert variable in message


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKMON_CONCURRENCY_LIMIT", "7")
    monkeypatch.setenv("TASKMON_ENGINE", "espeak")
    settings = load_settings({"concurrency_limit": 3, "engine": "tone"})
    assert settings.concurrency_limit == 3
    assert settings.engine is EngineName.TONE
    # The environment still supplies what the overrides leave out.
    monkeypatch.setenv("TASKMON_MAX_PENDING", "5")
    assert load_settings({"concurrency_limit": 3}).max_pending == 5


def test_an_override_wins_over_a_bad_environment_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKMON_CONCURRENCY_LIMIT", "0")
    assert load_settings({"concurrency_limit": 2}).concurrency_limit == 2


def test_bad_override_is_reported_by_variable_name() -> None:
    with pytest.raises(ConfigError, match="TASKMON_CONCURRENCY_LIMIT=0"):
        load_settings({"concurrency_limit": 0})


def test_unknown_override_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match="TASKMON_CONCURENCY_LIMIT") as caught:
        load_settings({"concurency_limit": 3})  # a typo must not be silently ignored
    assert "concurency_limit" in str(caught.value).lower()


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.concurrency_limit = 9  # type: ignore[misc]
    assert isinstance(settings, Settings)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_redis_mode_without_a_url_is_refused_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once, in `taskmon serve` or the gunicorn master, rather than in every worker."""
    monkeypatch.setenv("TASKMON_BACKEND", "redis")
    with pytest.raises(ConfigError, match=r"TASKMON_BACKEND='redis': .*needs TASKMON_REDIS_URL"):
        load_settings()
    monkeypatch.setenv("TASKMON_REDIS_URL", "redis://127.0.0.1:1/0")
    assert load_settings().backend == "redis"


def test_threads_are_validated_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKMON_THREADS", "abc")
    with pytest.raises(ConfigError, match="TASKMON_THREADS"):
        load_settings()


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_admin_token_is_refused_rather_than_enabling_the_admin_endpoints(
    monkeypatch: pytest.MonkeyPatch, blank: str
) -> None:
    # Blank would match an empty `Authorization: Bearer ` header.
    message = config_error(monkeypatch, TASKMON_ADMIN_TOKEN=blank)
    assert "TASKMON_ADMIN_TOKEN" in message
    assert "blank" in message


def test_a_short_admin_token_is_refused_and_sixteen_characters_are_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = config_error(monkeypatch, TASKMON_ADMIN_TOKEN="s" * 15)
    assert "TASKMON_ADMIN_TOKEN=<hidden>" in message
    assert "shorter than 16 characters" in message
    assert "s" * 15 not in message
    monkeypatch.setenv("TASKMON_ADMIN_TOKEN", "s" * 16)
    token = load_settings().admin_token
    assert token is not None
    assert token.get_secret_value() == "s" * 16


def test_stream_and_result_bounds_default_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings()
    assert settings.sse_max_streams is None
    assert settings.sse_stream_limit == 24  # the 32 default threads less 8 for the API
    assert settings.sse_idle_timeout_s == 300.0
    assert settings.result_max_bytes == 1024**3
    monkeypatch.setenv("TASKMON_THREADS", "12")
    assert load_settings().sse_stream_limit == 9
    monkeypatch.setenv("TASKMON_SSE_MAX_STREAMS", "12")
    monkeypatch.setenv("TASKMON_SSE_IDLE_TIMEOUT_S", "45.5")
    monkeypatch.setenv("TASKMON_RESULT_MAX_BYTES", "5000000")
    settings = load_settings()
    assert (settings.sse_stream_limit, settings.sse_idle_timeout_s) == (12, 45.5)
    assert settings.result_max_bytes == 5_000_000


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TASKMON_SSE_MAX_STREAMS", "0"),
        ("TASKMON_SSE_MAX_STREAMS", "33"),  # more than the 32 threads that would serve them
        ("TASKMON_SSE_IDLE_TIMEOUT_S", "0"),
        ("TASKMON_SSE_IDLE_TIMEOUT_S", "-1"),
        ("TASKMON_RESULT_MAX_BYTES", "0"),
        ("TASKMON_RESULT_MAX_BYTES", "1GB"),
    ],
)
def test_stream_and_result_bounds_are_validated_by_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    assert f"{variable}={value!r}" in config_error(monkeypatch, **{variable: value})


def test_a_stream_limit_over_the_threads_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    message = config_error(monkeypatch, TASKMON_THREADS="8", TASKMON_SSE_MAX_STREAMS="9")
    assert "TASKMON_SSE_MAX_STREAMS='9': Value error, is more than TASKMON_THREADS=8" in message
