"""Settings: every TASKMON_ environment variable, parsed and validated once at start-up.

A wrong value stops start-up with a ConfigError that names the variable, the value and the rule,
so an operator never has to read a traceback to find which line of their environment is wrong.
So do values that are each fine but contradict one another (`_no_contradictions`): the message
names every variable of the pair, their values and the rule.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "TASKMON_"
# Most threads a worker keeps from SSE streams by default, for API requests (milliseconds each).
API_RESERVED_THREADS = 8

# The backoff cap of the Redis client's Retry, in seconds (redis/connection.py builds it): part
# of the longest a Redis call can take, which some settings must leave room for.
REDIS_BACKOFF_CAP_S = 0.1
# The shortest TASKMON_ADMIN_TOKEN taken: 16 characters, 64 bits as hex.
MIN_ADMIN_TOKEN_LENGTH = 16


class BackendMode(StrEnum):
    AUTO = "auto"
    REDIS = "redis"
    MEMORY = "memory"


class EngineName(StrEnum):
    ESPEAK = "espeak"
    TONE = "tone"


class FallbackPolicy(StrEnum):
    PARTITION = "partition"
    REJECT = "reject"


class ConfigError(ValueError):
    """A TASKMON_ variable holds a value taskmon cannot run with."""


def _default_engine() -> EngineName:
    return EngineName.ESPEAK if shutil.which("espeak-ng") else EngineName.TONE


def _default_result_dir() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    base = Path(data_home) if os.access(Path(data_home).parent, os.W_OK) else None
    return (base or Path(tempfile.gettempdir())) / "taskmon" / "results"


# The TLS files a rediss:// URL may name (redis-py's SSLConnection options), each checked at
# start: a missing one would otherwise fail every connection with a bare "No such file".
_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def _check_tls_options(url: str) -> None:
    """Raise ValueError when the URL's ssl_* options cannot work: given to a plain redis://
    URL (redis-py would raise TypeError at the first connection), or naming a file this
    process cannot read. The message names the option, never the URL (it may hold a password).
    """
    parts = urlsplit(url)
    options = parse_qs(parts.query)
    ssl_options = sorted(name for name in options if name.startswith("ssl_"))
    if ssl_options and parts.scheme != "rediss":
        raise ValueError(f"{', '.join(ssl_options)} need a rediss:// URL (TLS)")
    for name in _TLS_FILES:
        for value in options.get(name, []):
            path = Path(value)
            if not path.is_file() or not os.access(path, os.R_OK):
                raise ValueError(f"{name}={value} is not a file this process can read")
    if "ssl_ca_path" in options and not Path(options["ssl_ca_path"][0]).is_dir():
        raise ValueError(f"ssl_ca_path={options['ssl_ca_path'][0]} is not a directory")


class Settings(BaseSettings):
    """The configuration of one taskmon process: every TASKMON_ variable (README, Configuration)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    redis_url: SecretStr | None = None
    backend: BackendMode = BackendMode.AUTO
    concurrency_limit: int = Field(default=4, ge=1, le=10_000)
    lease_ttl_ms: int = Field(default=10_000, ge=100, le=3_600_000)
    engine: EngineName = Field(default_factory=_default_engine)
    tone_ms_per_char: float = Field(default=10.0, ge=0, le=10_000)
    result_dir: Path = Field(default_factory=_default_result_dir)
    max_pending: int = Field(default=64, ge=1, le=100_000)
    task_ttl_s: int = Field(default=86_400, ge=1)
    key_prefix: str = Field(default="taskmon", min_length=1, max_length=64, pattern=r"^[\w.:-]+$")
    workers: int | None = Field(default=None, ge=1, le=10_000)
    # Set per worker by the gunicorn config (a stable slot 0..workers-1); None outside gunicorn.
    worker_index: int | None = Field(default=None, ge=0)
    fallback_policy: FallbackPolicy = FallbackPolicy.PARTITION
    journal_dir: Path | None = None
    admin_token: SecretStr | None = None
    # Operational knobs with safe defaults.
    # Hot-path Redis calls fail fast: redis-py's defaults (5 s timeouts, 10 retries) can stall
    # one request for close to a minute against a cut Redis. With these, a call gives up
    # within 0.8 s, and the failover layer degrades on the first call that does.
    redis_socket_timeout_s: float = Field(default=0.3, gt=0, le=30)
    redis_connect_timeout_s: float = Field(default=0.3, gt=0, le=30)
    redis_retries: int = Field(default=1, ge=0, le=10)
    permit_timeout_s: float = Field(default=300.0, gt=0, le=86_400)
    sse_keepalive_s: float = Field(default=15.0, gt=0, le=15.0)
    engine_timeout_s: float = Field(default=120.0, gt=0, le=3_600)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # gunicorn threads per worker (gunicorn_conf); each open SSE stream holds one.
    threads: int = Field(default=32, ge=1, le=1024)
    # Open SSE streams one worker serves at once; past it a stream request answers 503. Unset:
    # `default_sse_max_streams(threads)`, the threads less a few, because a stream holds its
    # thread for the whole task and API requests queue behind streams once every thread is
    # held. A request takes milliseconds, so a few threads serve them all: a quarter of the
    # threads, at least one and at most 8 (32 threads: 24 streams; 384: 376). At most
    # TASKMON_THREADS.
    sse_max_streams: int | None = Field(default=None, ge=1, le=1024)
    # A stream that sent no state event for this long ends with a `retry:` hint, and an
    # EventSource comes back with Last-Event-ID (to any worker). Keepalives do not count: they
    # keep proxies from cutting a quiet stream, this bounds how long one quiet client holds a
    # thread. With the defaults a healthy task is never that quiet: it waits at most
    # TASKMON_PERMIT_TIMEOUT_S (300 s) for a permit, then runs under TASKMON_ENGINE_TIMEOUT_S.
    sse_idle_timeout_s: float = Field(default=300.0, gt=0, le=86_400)
    # The result directory's bound besides TASKMON_TASK_TTL_S (results.py): past it the oldest
    # finished results go first. 1 GiB holds about 6.7 hours of espeak-ng's audio (22 kHz,
    # 16-bit mono, 44 KB a second): some 4,000 results of a sentence or two, or 80 of the
    # longest texts (5000 characters, about 5 minutes of speech each).
    result_max_bytes: int = Field(default=1024**3, ge=1, le=1024**5)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("must start with redis://, rediss:// or unix://")
        if value is not None:
            _check_tls_options(value.get_secret_value())
        return value

    @field_validator("admin_token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        # A blank token would enable the admin endpoints for an empty Bearer header.
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is blank: unset it to disable the admin endpoints, or set a token")
        # It guards releasing permits and draining workers: a short one falls to guessing.
        if value is not None and len(value.get_secret_value()) < MIN_ADMIN_TOKEN_LENGTH:
            raise ValueError(
                f"is shorter than {MIN_ADMIN_TOKEN_LENGTH} characters: use a random one, e.g. "
                "`openssl rand -hex 16`"
            )
        return value

    @field_validator("backend")
    @classmethod
    def _redis_needs_a_url(cls, value: BackendMode, info: ValidationInfo) -> BackendMode:
        if value is BackendMode.REDIS and info.data.get("redis_url") is None:
            raise ValueError("redis needs TASKMON_REDIS_URL")
        return value

    @field_validator("sse_max_streams")
    @classmethod
    def _streams_fit_the_threads(cls, value: int | None, info: ValidationInfo) -> int | None:
        threads = info.data.get("threads")
        if value is not None and threads is not None and value > threads:
            raise ValueError(
                f"is more than TASKMON_THREADS={threads}: each open stream holds one thread"
            )
        return value

    @property
    def lease_ttl_s(self) -> float:
        return self.lease_ttl_ms / 1000.0

    @property
    def sse_stream_limit(self) -> int:
        """TASKMON_SSE_MAX_STREAMS, or the default derived from TASKMON_THREADS."""
        if self.sse_max_streams is not None:
            return self.sse_max_streams
        return default_sse_max_streams(self.threads)

    @property
    def redis_call_budget_s(self) -> float:
        """The longest one Redis call can take against a cut Redis: every try times out."""
        return (self.redis_retries + 1) * (self.redis_socket_timeout_s + REDIS_BACKOFF_CAP_S)

    @property
    def uses_redis(self) -> bool:
        """Whether this configuration may run on Redis (redis, or auto with a URL)."""
        return self.backend is BackendMode.REDIS or (
            self.backend is BackendMode.AUTO and self.redis_url is not None
        )

    @model_validator(mode="after")
    def _no_contradictions(self) -> Self:
        """Refuse pairs of settings that cannot both hold: each fine alone, together a
        promise the service would break. Rules about Redis apply only when it may be used
        (memory mode ignores the Redis settings, so they cannot contradict anything)."""
        problems = [*_task_ttl_problems(self)]
        if self.uses_redis:
            problems += _lease_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def default_sse_max_streams(threads: int) -> int:
    """`threads` less those kept for API requests while every stream slot is held: a quarter,
    at least one (from two threads on) and at most API_RESERVED_THREADS."""
    return max(1, threads - min(API_RESERVED_THREADS, max(1, threads // 4)))


def _task_ttl_problems(settings: Settings) -> list[str]:
    """An Idempotency-Key is kept TASKMON_TASK_TTL_S from its task's creation (renewed at the
    finish); a task may wait TASKMON_PERMIT_TIMEOUT_S for a permit and then run
    TASKMON_ENGINE_TIMEOUT_S. A shorter TTL lets the key expire while its task still waits or
    runs: a client retrying with that key gets a second synthesis. (The result sweep would
    also delete a running synthesis's file.)"""
    live_s = settings.permit_timeout_s + settings.engine_timeout_s
    if settings.task_ttl_s >= live_s:
        return []
    return [
        f"TASKMON_TASK_TTL_S={settings.task_ttl_s} is shorter than TASKMON_PERMIT_TIMEOUT_S="
        f"{settings.permit_timeout_s:g} + TASKMON_ENGINE_TIMEOUT_S={settings.engine_timeout_s:g}"
        f" ({live_s:g} s, the longest a task may wait for a permit and then run): an "
        "Idempotency-Key would expire while its task still waits or runs, and a retry with it "
        "would start a second synthesis. Raise TASKMON_TASK_TTL_S to at least "
        f"{math.ceil(live_s)} or lower the timeouts"
    ]


def _lease_problems(settings: Settings) -> list[str]:
    problems = []
    lease_s = settings.lease_ttl_s
    # A dead worker stays listed as expired for TASKMON_TASK_TTL_S; a reaper sees it within
    # a lease TTL of contact and a third of one more. Dropped unseen, its tasks stay live.
    if settings.task_ttl_s < 2 * lease_s:
        problems.append(
            f"TASKMON_TASK_TTL_S={settings.task_ttl_s} is shorter than twice TASKMON_LEASE_TTL_MS="
            f"{settings.lease_ttl_ms} ({2 * lease_s:g} s): a dead worker stays listed for the "
            "reapers TASKMON_TASK_TTL_S after its heartbeat lapsed, and they may need more "
            "than a lease TTL to see it, so its tasks could stay queued or running for good. "
            f"Raise TASKMON_TASK_TTL_S to at least {math.ceil(2 * lease_s)} or shorten the lease"
        )
    # The heartbeat and the lease keeper extend by one lease TTL every third of it: a call
    # the client rides out (each retried try timing out, then one answering) must land in the
    # two thirds left, or one slow moment of Redis costs a live worker its heartbeat and
    # permits. (A call that fails for good trips the failover: no rule can help that.)
    least_ms = math.ceil(
        1.5 * settings.redis_retries * (settings.redis_socket_timeout_s + REDIS_BACKOFF_CAP_S)
        * 1000 - 1e-6
    )  # fmt: skip
    if settings.lease_ttl_ms < least_ms:
        problems.append(
            f"TASKMON_LEASE_TTL_MS={settings.lease_ttl_ms} is too short for "
            f"TASKMON_REDIS_RETRIES={settings.redis_retries} retries of "
            f"TASKMON_REDIS_SOCKET_TIMEOUT_S={settings.redis_socket_timeout_s:g} (+ "
            f"{REDIS_BACKOFF_CAP_S:g} s backoff each): the heartbeat and the permit renewals "
            "extend the lease every third of it, and a call delayed by those retries must land "
            "in the two thirds left, or a live worker is taken for dead and loses its permits. "
            f"Set TASKMON_LEASE_TTL_MS to at least {least_ms}, or shorten the socket timeout "
            "or the retries"
        )
    return problems


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Read the environment, apply `overrides` (field names, not variable names), validate.

    Raises ConfigError naming every offending TASKMON_ variable.
    """
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if not error["loc"]:  # a rule across settings: its message names them all
                problems.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            field = ".".join(str(part) for part in error["loc"])
            variable = f"{ENV_PREFIX}{field.upper()}"
            shown = "<hidden>" if field in {"redis_url", "admin_token"} else repr(error["input"])
            problems.append(f"{variable}={shown}: {error['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
