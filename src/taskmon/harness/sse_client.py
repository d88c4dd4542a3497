"""A small, strict Server-Sent Events reader for the checkers (stdlib only).

It keeps comment lines as well as events, so a test can see the keepalives, and it reads with
a socket timeout so a stream that stalls fails the caller instead of hanging it.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from taskmon.harness.client import connect


@dataclass
class SSEMessage:
    event: str = "message"
    data: str = ""
    id: str | None = None
    received_at: float = 0.0  # time.monotonic() when its blank line arrived

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SSEStream:
    status: int
    headers: dict[str, str]
    messages: list[SSEMessage] = field(default_factory=list)
    comments: list[tuple[float, str]] = field(default_factory=list)
    ended: bool = False  # the server closed the stream (as opposed to our deadline)


def read_stream(
    base_url: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
    connection: http.client.HTTPConnection | None = None,
    until: Callable[[SSEMessage], bool] | None = None,
) -> SSEStream:
    """Read a stream until the server ends it, `timeout` passes, or `until(message)` is true.

    Pass `connection` to reuse a kept-alive connection (and so reach a known worker); `until`
    to leave early, as a client that reconnects later with Last-Event-ID does (the stream is
    then not `ended`).
    """
    own = connection is None
    if connection is None:
        connection = connect(base_url, timeout)
    deadline = time.monotonic() + timeout
    try:
        connection.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        response = connection.getresponse()
        result = SSEStream(response.status, dict(response.getheaders()))
        if response.status != 200:
            response.read()
            result.ended = True
            return result
        parser = _Parser(result)
        while time.monotonic() < deadline:
            raw = response.readline()
            if not raw:
                result.ended = True
                break
            count = len(result.messages)
            parser.feed(raw.decode().rstrip("\r\n"))
            if until is not None and len(result.messages) > count and until(result.messages[-1]):
                break
        return result
    finally:
        if own:
            connection.close()


class _Parser:
    """Turns lines into messages per the EventSource rules we rely on (no `retry:` handling)."""

    def __init__(self, result: SSEStream) -> None:
        self.result = result
        self.pending = SSEMessage()
        self.data_lines: list[str] = []

    def feed(self, line: str) -> None:
        if line == "":
            if self.data_lines or self.pending.id is not None:
                self.pending.data = "\n".join(self.data_lines)
                self.pending.received_at = time.monotonic()
                self.result.messages.append(self.pending)
            self.pending, self.data_lines = SSEMessage(), []
        elif line.startswith(":"):
            self.result.comments.append((time.monotonic(), line[1:].strip()))
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self.data_lines.append(value)
            elif name == "event":
                self.pending.event = value
            elif name == "id":
                self.pending.id = value
