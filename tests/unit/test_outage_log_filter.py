"""One line of each kind per outage, no traceback; everything passes while healthy."""

from __future__ import annotations

import logging

import pytest

from taskmon.failover import OutageLogFilter


def record(name: str, msg: str, level: int = logging.WARNING, *args: object) -> logging.LogRecord:
    try:
        raise ConnectionError("refused")
    except ConnectionError:
        import sys  # noqa: PLC0415

        exc_info = sys.exc_info()
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


def test_repeats_of_a_kind_are_held_back_while_degraded_and_counted() -> None:
    degraded = [True]
    quiet = OutageLogFilter(lambda: degraded[0])
    first = record("taskmon.redis.subscriber", "lost Redis (%s); retrying in %.2f s", 30, "x", 0.1)
    assert quiet.filter(first)
    assert first.exc_info is None, "an expected outage logs no traceback"
    again = record("taskmon.redis.subscriber", "lost Redis (%s); retrying in %.2f s", 30, "y", 0.2)
    assert not quiet.filter(again)
    assert quiet.filter(record("taskmon.redis.workers", "heartbeat failed (%s)")), "another kind"
    assert quiet.filter(record("taskmon.x", "a bug", logging.ERROR)), "errors always pass"
    assert quiet.outage_over() == 1
    degraded[0] = False
    assert quiet.filter(again), "healthy: nothing is held back"
    healthy = record("taskmon.redis.subscriber", "lost Redis")
    assert quiet.filter(healthy)
    assert healthy.exc_info is not None


def test_install_covers_the_package_loggers(caplog: pytest.LogCaptureFixture) -> None:
    quiet = OutageLogFilter(lambda: True)
    quiet.install()
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(5):
                logging.getLogger("taskmon.redis.subscriber").warning("lost Redis")
        assert len(caplog.records) == 1
    finally:
        quiet.uninstall()
