"""URLs shown without their secrets, and a failed first contact named by its cause (the errors
here are the texts redis-py raised against a real redis-server: see
tests/integration/test_redis_tls.py and test_redis_acl.py for the live ones)."""

from __future__ import annotations

import hashlib

import pytest
import redis

from taskmon.ports import BackendUnavailable
from taskmon.redis.connection import redacted
from taskmon.redis.diagnosis import diagnose, refused_by_acl
from taskmon.redis.scripts import failing_line, script_source


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://taskmon:S3cr3t@h:6379/0", "redis://taskmon:***@h:6379/0"),
        ("redis://u:p%40ss@h/1", "redis://u:***@h/1"),
        ("redis://u:p@ss@h/1", "redis://u:***@h/1"),  # an unencoded @ in the password
        ("redis://u:pw@[::1]:6379/0", "redis://u:***@[::1]:6379/0"),
        ("rediss://u:pw@h:6380/0?ssl_ca_certs=/etc/ca.crt", "rediss://u:***@h:6380/0?ssl_ca_certs=/etc/ca.crt"),
        ("redis://h:6379/0?password=pw&db=1", "redis://h:6379/0?password=***&db=1"),
        ("rediss://h/0?ssl_keyfile=/k&ssl_password=kp", "rediss://h/0?ssl_keyfile=/k&ssl_password=***"),
        ("unix:///run/redis.sock?password=pw", "unix:///run/redis.sock?password=***"),
        ("unix:///run/redis.sock?db=2", "unix:///run/redis.sock?db=2"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)  # fmt: skip
def test_redacted_hides_every_password_and_keeps_the_rest(url: str, shown: str) -> None:
    assert redacted(url) == shown


URL = "rediss://127.0.0.1:6380/0?ssl_ca_certs=/ca.crt"
WITH_CERT = URL + "&ssl_certfile=/c.crt&ssl_keyfile=/c.key"
EOF_TEXT = "Error 8 while writing to socket. EOF occurred in violation of protocol (_ssl.c:2427)."
VERIFY = (
    "Error 1 connecting to 127.0.0.1:6380. [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
    "failed: self-signed certificate in certificate chain (_ssl.c:1006)."
)


@pytest.mark.parametrize(
    ("error", "url", "problem", "todo"),
    [
        (redis.ConnectionError(VERIFY), URL, "TLS certificate of Redis at", "set ssl_ca_certs"),
        (redis.ConnectionError(EOF_TEXT), URL, "closed the TLS connection",
         "demands a client certificate"),
        (redis.ConnectionError(EOF_TEXT), WITH_CERT, "closed the TLS connection",
         "refused the client certificate"),
        (redis.TimeoutError("Timeout connecting to server"), URL, "does not answer",
         "use redis://"),
        (redis.ConnectionError("Error while reading from h:1 : (104, 'Connection reset by peer')"),
         "redis://h:1/0", "does not answer", "use rediss://"),
        (redis.AuthenticationError("invalid username-password pair or user is disabled."),
         "redis://taskmon:***@h:1/0", "refused the user and password", "is `on`"),
        (redis.AuthenticationError("Authentication required."), "redis://h:1/0",
         "requires a password", "redis://taskmon:PASSWORD@host"),
        (redis.exceptions.NoPermissionError("this user has no permissions to run the 'evalsha'"),
         "redis://taskmon:***@h:1/0", "refused a command", "deploy/redis/taskmon.acl"),
        (redis.ConnectionError("Error 111 connecting to h:1. Connection refused."),
         "redis://h:1/0", "does not answer", "start Redis"),
    ],
)  # fmt: skip
def test_diagnose_names_the_cause_and_the_setting(
    error: Exception, url: str, problem: str, todo: str
) -> None:
    found = diagnose(error, url, key_prefix="taskmon")
    assert problem in found.problem
    assert str(error) in found.problem
    assert todo in found.todo


def test_diagnose_looks_behind_backend_unavailable() -> None:
    try:
        try:
            raise redis.ConnectionError(VERIFY)
        except redis.ConnectionError as inner:
            raise BackendUnavailable("Redis did not answer while reading") from inner
    except BackendUnavailable as outer:
        found = diagnose(outer, URL, key_prefix="taskmon")
    assert "set ssl_ca_certs" in found.todo


def test_the_acl_hint_names_the_key_prefix() -> None:
    refused = redis.exceptions.NoPermissionError("no permissions")
    found = diagnose(refused, "redis://h/0", key_prefix="tenant-a")
    assert "~{tenant-a}:* and &{tenant-a}:* for TASKMON_KEY_PREFIX=tenant-a" in found.todo


def test_a_refusal_inside_a_script_is_an_acl_refusal_and_its_line_is_found() -> None:
    source = script_source("task_start")
    line = next(n for n, text in enumerate(source.splitlines(), 1) if "HINCRBY" in text)
    sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324
    error = redis.ResponseError(
        f"The user executing the script can't run this command or subcommand script: {sha}, "
        f"on @user_script:{line}."
    )
    assert refused_by_acl(error)
    assert not refused_by_acl(redis.ResponseError("WRONGTYPE Operation against a key"))
    where = failing_line(str(error))
    assert where is not None
    assert where.startswith(f"task_start.lua line {line}: ")
    assert "HINCRBY" in where
    assert failing_line("script: " + "0" * 40 + ", on @user_script:3.") is None
