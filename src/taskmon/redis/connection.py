"""Redis clients for one worker: short timeouts and an explicit, small retry on the hot path.

One pool per worker process, built by taskmon.runtime after fork and closed at exit. A cut Redis
costs a call at most (retries + 1) x (timeout + backoff), 0.8 s with the defaults, never the
minute redis-py's defaults allow: the failover layer trips on the first call that fails, so this
budget is also how long detecting an outage takes. A call that finds every pooled connection
busy first waits for one (up to one more budget, `pool_wait_s`).

redis-py retries a connection's connect and handshake with the same Retry as the command
around it, so a call that needs a new connection to a silent Redis would pay (retries + 1)
squared timeouts (5.0 s measured against 2.1 s documented, with the old defaults). The
connections built here connect once per attempt and leave retrying to the command.
"""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from taskmon.config import REDIS_BACKOFF_CAP_S, Settings

# Query options of a Redis URL that redis-py takes as secrets (the password may be given as
# `?password=` instead of in the authority; `ssl_password` unlocks an encrypted client key).
_SECRET_OPTIONS = frozenset({"password", "ssl_password"})


def redacted(url: str) -> str:
    """The URL with its passwords replaced by ***, for logs, errors and /readyz: the one in
    the authority and any secret query option. The user, host, port, database and the TLS
    file paths stay, so the URL still says where and as whom taskmon connects."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user_info, _, host = netloc.rpartition("@")
        user = user_info.partition(":")[0]
        netloc = f"{user}:***@{host}"
    query = "&".join(
        f"{name}=***" if name in _SECRET_OPTIONS else f"{name}{sep}{value}"
        for name, sep, value in (option.partition("=") for option in parts.query.split("&"))
    ) if parts.query else ""  # fmt: skip
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # Assembled by hand: urlunsplit drops the `//` of unix:///path (an empty authority).
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


# The backoff cap of the client's Retry, in seconds (see make_client).
BACKOFF_CAP_S = REDIS_BACKOFF_CAP_S


def call_budget_s(settings: Settings) -> float:
    """The longest one Redis call can take against a cut Redis: every try times out."""
    return settings.redis_call_budget_s


def pool_wait_s(settings: Settings) -> float:
    """How long a call waits for a free pool connection when all are busy, before its own
    budget starts: one call budget, the longest a busy connection can stay busy. 0.1 s was
    too short: 250 streams opening at once on one worker held all 64 connections longer
    (their threads waiting for the GIL with a reply in hand) and tripped it to degraded."""
    return call_budget_s(settings)


def make_client(
    settings: Settings,
    *,
    client_name: str,
    socket_timeout_s: float | None = None,
    max_connections: int = 64,
) -> redis.Redis:
    """A client on its own pool; `socket_timeout_s` overrides the hot-path timeout.

    The client owns its pool: `close()` disconnects every pooled socket. (A client built with
    `connection_pool=` does not, and leaks one socket per connection it ever opened.)
    The pool holds at most `max_connections`, whatever the number of streams or threads; a
    call that finds them all busy waits up to `pool_wait_s` for one, then fails as an
    unreachable Redis would (BackendUnavailable upstream). A pool that raised at once
    instead tripped a worker to degraded mode when 250 streams opened together.
    """
    if settings.redis_url is None:
        raise ValueError("TASKMON_REDIS_URL is not set")
    retry = Retry(ExponentialBackoff(cap=BACKOFF_CAP_S, base=0.02), settings.redis_retries)
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url.get_secret_value(),
        socket_timeout=socket_timeout_s or settings.redis_socket_timeout_s,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        retry=retry,
        health_check_interval=15,
        client_name=client_name.replace(" ", "_"),
        max_connections=max_connections,
        timeout=pool_wait_s(settings),
        decode_responses=True,
        # No CLIENT SETINFO (Redis 7.2+): two round trips fewer per connection, and one
        # command fewer for an ACL user to be granted (deploy/redis/taskmon.acl).
        driver_info=None,
    )
    pool.connection_class = connecting_once(pool.connection_class)
    return redis.Redis.from_pool(pool)


@cache
def connecting_once(connection_class: type[Any]) -> type[Any]:
    """`connection_class` (plain, TLS or Unix socket) with one connect try per command try.

    The command's Retry still reconnects: each of its tries opens at most one connection.
    """

    class ConnectingOnce(connection_class):  # type: ignore[misc]
        def connect(self) -> None:
            self.connect_check_health(check_health=True, retry_socket_connect=False)

    ConnectingOnce.__name__ = ConnectingOnce.__qualname__ = (
        f"ConnectingOnce{connection_class.__name__}"
    )
    return ConnectingOnce
