"""One proxied connection: two pumps (upstream: client to server, downstream: back) and the
toxics acting on it.

Toxics apply to connections open when the toxic is added as well as to later ones (as in
Toxiproxy): each connection rolls a toxic's toxicity once, when they meet, and keeps the
outcome. Removing a toxic ends its effect on every connection at once (a timeout toxic's pending
close is cancelled, data flows again). Everything here runs on the proxy's one event loop.

The HTTP toxics (toxics.py) take a chunk that follows one in the other direction for the start of
a request (upstream) or of an answer (downstream), an interim `1xx` answer aside: right for
HTTP/1.1 without pipelining, which is what clients send. Not for a service that answers while
the request's body is still coming (an early 413, say): the next body chunk would count as a new
request, and the rest of that answer as a new answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import socket
import struct
from collections.abc import Callable

from taskmon.faultproxy.toxics import Toxic

_CHUNK = 32 * 1024
# An `http_error` upstream reads the whole request before answering (the client would see a
# reset otherwise), up to this much of it.
_MAX_REQUEST = 1024 * 1024
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding[ \t]*:[^\r]*chunked", re.IGNORECASE)
_EXPECTS = re.compile(rb"\r\nexpect[ \t]*:[ \t]*100-continue", re.IGNORECASE)
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")
# A client that sends less than its request says is answered anyway after this long.
_REQUEST_READ_S = 5.0
_REASONS = {400: "Bad Request", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip


class Link:
    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        *,
        toxics: Callable[[], list[Toxic]],
        count: Callable[[str, int], None],
        rng: random.Random,
    ) -> None:
        self._client = client
        self._server = server
        self._toxics = toxics
        self._count = count
        self._rng = rng
        self._hits: dict[int, bool] = {}  # id(toxic) -> its roll for this connection
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._sent: dict[int, int] = {}  # limit_data: bytes passed per toxic
        self._closed = asyncio.Event()
        self._pumps: list[asyncio.Task[None]] = []
        self._last_stream = ""  # the direction of the last chunk read: where a message starts

    async def run(self) -> None:
        """Pump both ways until either side ends or a toxic ends the connection."""
        for toxic in self._toxics():
            self.meet(toxic)
        self._pumps = [
            asyncio.create_task(self._pump(self._client[0], self._server[1], "upstream")),
            asyncio.create_task(self._pump(self._server[0], self._client[1], "downstream")),
        ]
        await self._closed.wait()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    def meet(self, toxic: Toxic) -> None:
        """`toxic` was added (or this link opened): roll it, and start its timer if it has one."""
        if id(toxic) in self._hits:
            return
        hit = self._hits[id(toxic)] = toxic.roll(self._rng)
        if not hit:
            return
        loop = asyncio.get_running_loop()
        if toxic.type == "timeout" and toxic.attr("timeout") > 0:
            self._timers[id(toxic)] = loop.call_later(toxic.attr("timeout") / 1000, self.close)
        elif toxic.type == "reset_peer":
            self._timers[id(toxic)] = loop.call_later(
                toxic.attr("timeout") / 1000, self.close, True
            )

    def forget(self, toxic: Toxic) -> None:
        """`toxic` was removed: its pending effects on this connection end."""
        self._hits.pop(id(toxic), None)
        self._sent.pop(id(toxic), None)
        timer = self._timers.pop(id(toxic), None)
        if timer is not None:
            timer.cancel()

    def close(self, reset: bool = False) -> None:
        """End both sides; `reset` sends a TCP RST (SO_LINGER 0) instead of a FIN."""
        if self._closed.is_set():
            return
        self._closed.set()
        for timer in self._timers.values():
            timer.cancel()
        for _, writer in (self._client, self._server):
            if reset:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                writer.transport.abort()
            else:
                writer.close()

    def _active(self, stream: str) -> list[Toxic]:
        return [t for t in self._toxics() if t.stream == stream and self._hits.get(id(t))]

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: str
    ) -> None:
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    await self._slow_close(stream)
                    break
                starts = self._last_stream != stream
                # An interim answer (100 Continue) is not the answer: the next chunk still is.
                interim = stream == "downstream" and data[:10].startswith(b"HTTP/1.1 1")
                self._last_stream = "" if interim else stream
                if starts and not interim and await self._http(data, reader, stream):
                    return
                await self._forward(data, writer, stream)
                if self._closed.is_set():
                    return
        except (ConnectionError, OSError):
            pass
        self.close()

    async def _forward(self, data: bytes, writer: asyncio.StreamWriter, stream: str) -> None:
        slices = [data]
        for toxic in self._active(stream):
            kind = toxic.type
            if kind in ("timeout", "reset_peer"):
                return  # held: nothing passes while the toxic is there
            if kind == "latency":
                jitter = toxic.attr("jitter")
                delay = toxic.attr("latency") + (
                    self._rng.randint(-jitter, jitter) if jitter else 0
                )
                await asyncio.sleep(max(0, delay) / 1000)
            elif kind == "bandwidth":
                rate = toxic.attr("rate")
                if rate == 0:
                    return
                await asyncio.sleep(len(data) / (rate * 1000))
            elif kind == "limit_data":
                allowed = toxic.attr("bytes") - self._sent.get(id(toxic), 0)
                if allowed <= len(data):
                    await self._write(writer, stream, data[: max(0, allowed)])
                    self.close()
                    return
                self._sent[id(toxic)] = self._sent.get(id(toxic), 0) + len(data)
            elif kind == "slicer":
                slices = self._slice(toxic, data)
        delay_s = 0.0
        for toxic in self._active(stream):
            if toxic.type == "slicer":
                delay_s = toxic.attr("delay") / 1_000_000
        for index, piece in enumerate(slices):
            if index and delay_s:
                await asyncio.sleep(delay_s)
            await self._write(writer, stream, piece)

    async def _http(self, data: bytes, reader: asyncio.StreamReader, stream: str) -> bool:
        """At the start of a request or an answer: the HTTP toxics. True when one answered in
        the service's place (the connection is then closed)."""
        for toxic in self._active(stream):
            if toxic.type == "slow_headers":
                await self._hold(toxic, toxic.attr("delay") / 1000)
        if any(t.type in ("timeout", "reset_peer") for t in self._active("downstream")):
            return False  # nothing reaches the client: no answer of ours either
        for toxic in self._active(stream):
            if toxic.type == "http_error":
                replaced = None
                if stream == "upstream":
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._read_request(data, reader), _REQUEST_READ_S)
                else:
                    status = _STATUS_LINE.match(data)
                    replaced = int(status.group(1)) if status else None
                await self._answer_error(toxic, replaced)
                return True
        return False

    async def _hold(self, toxic: Toxic, seconds: float) -> None:
        """Sleep `seconds`, or less if `toxic` is removed meanwhile (its effect ends then)."""
        until = asyncio.get_running_loop().time() + seconds
        while self._hits.get(id(toxic)) and not self._closed.is_set():
            left = until - asyncio.get_running_loop().time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.05))

    async def _read_request(self, data: bytes, reader: asyncio.StreamReader) -> None:
        """The rest of the request `data` begins (head, then Content-Length bytes of body)."""
        received = data
        while b"\r\n\r\n" not in received and len(received) < _MAX_REQUEST:
            more = await reader.read(_CHUNK)
            if not more:
                return
            received += more
        head, _, body = received.partition(b"\r\n\r\n")
        if _EXPECTS.search(head):
            return  # the client sends its body only after a 100 Continue: answer now
        if _CHUNKED.search(head):
            while not body.endswith(b"0\r\n\r\n") and len(body) < _MAX_REQUEST:
                more = await reader.read(_CHUNK)
                if not more:
                    return
                body += more
            return
        length = _CONTENT_LENGTH.search(head)
        missing = min(int(length.group(1)), _MAX_REQUEST) - len(body) if length else 0
        while missing > 0:
            more = await reader.read(min(_CHUNK, missing))
            if not more:
                return
            missing -= len(more)

    async def _answer_error(self, toxic: Toxic, replaced: int | None) -> None:
        """Our error answer; `replaced`, the status of the service's answer it stands for
        (X-Fault-Replaced), so a client can tell a lost 202 from a lost 500."""
        status = toxic.attr("status") or 503
        reason = _REASONS.get(status, "Error")
        body = json.dumps({
            "type": "about:blank",
            "title": reason,
            "status": status,
            "detail": f"injected by the fault proxy (toxic {toxic.name})",
        }).encode()  # fmt: skip
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            "Content-Type: application/problem+json\r\n"
            f"X-Fault-Injected: {toxic.name}\r\n"
            + (f"X-Fault-Replaced: {replaced}\r\n" if replaced is not None else "")
            + "Connection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with contextlib.suppress(ConnectionError, OSError):
            # Through the downstream toxics, as the service's answer would have gone.
            await self._forward(head + body, self._client[1], "downstream")
        self.close()

    def _slice(self, toxic: Toxic, data: bytes) -> list[bytes]:
        average = max(1, toxic.attr("average_size"))
        variation = min(toxic.attr("size_variation"), average - 1)
        pieces, start = [], 0
        while start < len(data):
            size = average + (self._rng.randint(-variation, variation) if variation else 0)
            pieces.append(data[start : start + max(1, size)])
            start += max(1, size)
        return pieces

    async def _write(self, writer: asyncio.StreamWriter, stream: str, data: bytes) -> None:
        if not data:
            return
        writer.write(data)
        self._count(stream, len(data))
        await writer.drain()

    async def _slow_close(self, stream: str) -> None:
        for toxic in self._active(stream):
            if toxic.type == "slow_close":
                await asyncio.sleep(toxic.attr("delay") / 1000)
