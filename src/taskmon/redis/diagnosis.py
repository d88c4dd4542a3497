"""What a worker's failed first contact with Redis means, in words an operator can act on.

A worker meets a wrong deployment at start-up: a TLS certificate its CA does not vouch for, a
Redis that demands a client certificate, a password or ACL user that Redis refuses, an ACL
that lacks a command taskmon sends, a URL whose scheme does not match the port. redis-py
reports each as a bare socket or protocol error ("EOF occurred in violation of protocol"),
which reads like an outage. `diagnose` names the cause and the setting to change; anything it
does not recognise reads as before: Redis does not answer, start it.

Guarantee: pure (no I/O), never raises; the URL it is given is already redacted.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import redis

from taskmon.ports import BackendRefused

ACL_FILE = "deploy/redis/taskmon.acl"


@dataclass(frozen=True)
class Diagnosis:
    """`problem`: what happened, naming Redis and the error; `todo`: what to change."""

    problem: str
    todo: str


def _text(exc: BaseException) -> str:
    parts = [str(exc)]
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc:
        parts.append(str(cause))
    return " ".join(parts)


def _innermost(exc: BaseException) -> BaseException:
    """The Redis error behind a BackendUnavailable (raised `from` it), else `exc`."""
    cause = exc.__cause__
    return cause if isinstance(cause, redis.RedisError) else exc


def refused_by_acl(exc: BaseException) -> bool:
    """True for a command Redis refused to this user: directly (NOPERM) or inside a script,
    where it is a plain script error naming the command."""
    return isinstance(exc, (redis.exceptions.NoPermissionError, BackendRefused)) or (
        isinstance(exc, redis.ResponseError)
        and ("NOPERM" in str(exc) or "user executing the script can't" in str(exc))
    )


def diagnose(exc: BaseException, url: str, *, key_prefix: str) -> Diagnosis:
    """The cause of `exc`, met by a worker connecting to Redis at `url` (redacted)."""
    inner = _innermost(exc)
    text = _text(inner)
    parts = urlsplit(url)
    tls = parts.scheme == "rediss"
    client_cert = "ssl_certfile" in parse_qs(parts.query)
    if refused_by_acl(inner):
        return Diagnosis(
            f"Redis at {url} refused a command, key or channel to the user of "
            f"TASKMON_REDIS_URL ({inner})",
            f"give that user the rules of {ACL_FILE}, with the key and channel patterns "
            f"~{{{key_prefix}}}:* and &{{{key_prefix}}}:* for TASKMON_KEY_PREFIX={key_prefix}",
        )
    if isinstance(inner, redis.AuthenticationError):
        if parts.password is None:  # the server asks for one (NOAUTH, or HELLO refused)
            return Diagnosis(
                f"Redis at {url} requires a password ({inner})",
                "put the user and password in TASKMON_REDIS_URL: "
                "redis://taskmon:PASSWORD@host:6379/0 (rediss:// for TLS)",
            )
        return Diagnosis(
            f"Redis at {url} refused the user and password of TASKMON_REDIS_URL ({inner})",
            f"check them, and that the ACL user is `on` ({ACL_FILE}); a password with @, : "
            "or / must be percent-encoded in the URL",
        )
    if tls and "CERTIFICATE_VERIFY_FAILED" in text:
        return Diagnosis(
            f"the TLS certificate of Redis at {url} was not accepted ({inner})",
            "set ssl_ca_certs in TASKMON_REDIS_URL to the CA certificate that signed Redis's "
            "(tls-cert-file), and use a host the certificate names (its subjectAltName)",
        )
    if tls and ("EOF occurred in violation of protocol" in text or "alert" in text.lower()):
        if client_cert:
            return Diagnosis(
                f"Redis at {url} closed the TLS connection during the handshake ({inner})",
                "it refused the client certificate: ssl_certfile must be signed by a CA in "
                "Redis's tls-ca-cert-file, and ssl_keyfile must be its key",
            )
        return Diagnosis(
            f"Redis at {url} closed the TLS connection during the handshake ({inner})",
            "it demands a client certificate (tls-auth-clients yes): add "
            "&ssl_certfile=CLIENT.crt&ssl_keyfile=CLIENT.key to TASKMON_REDIS_URL",
        )
    if tls and isinstance(inner, redis.TimeoutError):
        return Diagnosis(
            f"Redis at {url} does not answer ({inner})",
            "start Redis; if that port serves plain text, not TLS, use redis:// (a TLS "
            "handshake to a plain-text port waits for an answer that never comes)",
        )
    if not tls and ("reset by peer" in text or "closed by server" in text):
        return Diagnosis(
            f"Redis at {url} does not answer ({inner})",
            "start Redis; if that port serves TLS only, use rediss://host:port/0?"
            "ssl_ca_certs=CA.crt (a TLS port drops a plain-text client)",
        )
    return Diagnosis(f"Redis at {url} does not answer ({inner})", "start Redis")
