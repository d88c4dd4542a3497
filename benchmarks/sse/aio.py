"""A small asyncio HTTP/1.1 client: JSON requests, and Server-Sent Events streams held open
by the thousand in one process (one socket each, no thread per stream).

Every request opens its own connection (`Connection: close`), so gunicorn may hand each to
any worker, as independent browsers' connections are.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Event:
    data: str
    received_at: float  # time.time(): the service stamps its events with wall-clock times
    event: str = "message"

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Stream:
    """One open stream: its answer, the worker that serves it, what arrived, and whether the
    server ended it."""

    status: int = 0
    worker: str = ""
    events: list[Event] = field(default_factory=list)
    first: asyncio.Event = field(default_factory=asyncio.Event)  # the first event is in
    ended: bool = False
    error: str = ""


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    parts = status_line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP answer: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def request_json(
    host: str, port: int, method: str, path: str, body: Any = None, *, timeout: float = 30.0
) -> tuple[int, Any]:
    """One request on a fresh connection: the status and the decoded JSON body (or None)."""
    payload = b"" if body is None else json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )

    async def go() -> tuple[int, Any]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(head.encode() + payload)
            await writer.drain()
            status, _ = await _head(reader)
            raw = await reader.read()
            try:
                return status, json.loads(raw) if raw else None
            except ValueError:
                return status, None
        finally:
            writer.close()

    return await asyncio.wait_for(go(), timeout)


async def hold_stream(host: str, port: int, path: str, stream: Stream, stop: asyncio.Event) -> None:
    """Open `path` as an event stream and record every event until the server ends it or
    `stop` is set."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        stream.error = f"connect: {exc}"
        stream.first.set()
        return
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        stream.status, headers = await _head(reader)
        stream.worker = headers.get("x-worker-id", "")
        if stream.status != 200:
            stream.error = f"HTTP {stream.status}"
            stream.first.set()
            return
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        await _read_events(reader, stream, stop, chunked=chunked)
    except (OSError, ValueError, ConnectionError, asyncio.IncompleteReadError) as exc:
        stream.error = f"{type(exc).__name__}: {exc}"
    finally:
        stream.first.set()
        writer.close()


async def _read_events(
    reader: asyncio.StreamReader, stream: Stream, stop: asyncio.Event, *, chunked: bool
) -> None:
    lines = _lines(reader, chunked=chunked)
    data: list[str] = []
    event = "message"
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            next_line = asyncio.ensure_future(anext(lines, None))
            done, _ = await asyncio.wait({next_line, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if next_line not in done:
                next_line.cancel()
                return
            line = next_line.result()
            if line is None:
                stream.ended = True
                return
            if line == "":
                if data:
                    stream.events.append(Event("\n".join(data), time.time(), event))
                    stream.first.set()
                data, event = [], "message"
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif line.startswith("event:"):
                event = line[6:].strip()
    finally:
        stopping.cancel()


async def _lines(reader: asyncio.StreamReader, *, chunked: bool):  # type: ignore[no-untyped-def]
    """The body's lines, de-chunked when the answer is chunked."""
    if not chunked:
        while raw := await reader.readline():
            yield raw.decode().rstrip("\r\n")
        return
    pending = b""
    while True:
        size_line = await reader.readline()
        if not size_line:
            return
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return
        pending += await reader.readexactly(size)
        await reader.readexactly(2)  # the chunk's CRLF
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            yield raw.decode().rstrip("\r")
