"""The environment of a Redis-mode instance under test: the settings every e2e test of the
cap spells the same way (tone engine, a journal to judge I1 from)."""

from __future__ import annotations

from pathlib import Path


def redis_mode_env(
    redis_url: str, journal_dir: Path, *, limit: int, lease_ttl_ms: int, ms_per_char: int = 10
) -> dict[str, str]:
    """TASKMON_ variables for `gunicorn` in Redis mode with the tone engine and a journal."""
    return {
        "TASKMON_BACKEND": "redis",
        "TASKMON_REDIS_URL": redis_url,
        "TASKMON_ENGINE": "tone",
        "TASKMON_TONE_MS_PER_CHAR": str(ms_per_char),
        "TASKMON_CONCURRENCY_LIMIT": str(limit),
        "TASKMON_LEASE_TTL_MS": str(lease_ttl_ms),
        "TASKMON_JOURNAL_DIR": str(journal_dir),
    }
