"""The one translation of Redis failures: which become BackendUnavailable, and what they say."""

from __future__ import annotations

import pytest
import redis

from taskmon.ports import BackendUnavailable
from taskmon.redis.errors import UNAVAILABLE_ERRORS, unavailable, unavailable_as

OUTAGES = [
    redis.ConnectionError("Connection refused"),
    redis.TimeoutError("Timeout reading from socket"),
    redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
    redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
    redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
]


@pytest.mark.parametrize("error", OUTAGES, ids=lambda e: type(e).__name__)
def test_every_outage_becomes_backend_unavailable_saying_what_to_check(error: Exception) -> None:
    assert isinstance(error, UNAVAILABLE_ERRORS)
    with pytest.raises(BackendUnavailable) as raised, unavailable_as("reading task 1", "Retry."):
        raise error
    message = str(raised.value)
    assert message.startswith("Redis did not answer while reading task 1")
    assert type(error).__name__ in message
    assert str(error) in message
    assert "TASKMON_REDIS_URL" in message
    assert message.endswith(". Retry.")
    assert raised.value.__cause__ is error, "the original stays attached for a debugger"


@pytest.mark.parametrize(
    "error",
    [redis.ResponseError("ERR Error running script"), redis.DataError("bad value"), KeyError("x")],
    ids=lambda e: type(e).__name__,
)
def test_anything_else_is_not_an_outage_and_passes_through(error: Exception) -> None:
    with pytest.raises(type(error)), unavailable_as("running a script"):
        raise error


def test_without_a_consequence_the_message_ends_at_what_to_check() -> None:
    message = str(unavailable("listing the workers", redis.TimeoutError("slow")))
    assert message.endswith("a primary with memory to spare")
