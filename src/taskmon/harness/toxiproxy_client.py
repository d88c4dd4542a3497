"""toxiproxy-python pointed at one control API, with a timeout on every call it makes.

toxiproxy-python keeps its address in class attributes and calls `requests` with no timeout,
so a hung control API would hang the harness. This module points it at `url` and gives each of
its requests a timeout, once per process; the chaos runs and the contract tests use it the
same way whether our fault proxy or a real Toxiproxy answers.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests
import toxiproxy
import toxiproxy.api

DEFAULT_TIMEOUT_S = 5.0


class _TimedRequests:
    """What toxiproxy.api calls as `requests`: the same functions, each with a timeout."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return requests.get(url, timeout=kwargs.pop("timeout", self.timeout_s), **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return requests.post(url, timeout=kwargs.pop("timeout", self.timeout_s), **kwargs)

    def delete(self, url: str, **kwargs: Any) -> requests.Response:
        return requests.delete(url, timeout=kwargs.pop("timeout", self.timeout_s), **kwargs)


def connect(url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """A toxiproxy.Toxiproxy driving the control API at `url` (http://host:port)."""
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"a Toxiproxy API URL needs a host and a port: {url!r}")
    toxiproxy.api.requests = _TimedRequests(timeout_s)
    server = toxiproxy.Toxiproxy()
    server.update_api_consumer(parts.hostname, parts.port)
    return server
