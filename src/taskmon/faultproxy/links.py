"""One proxied connection: two pumps (upstream: client to server, downstream: back) and the
toxics acting on it.

Toxics apply to connections open when the toxic is added as well as to later ones (as in
Toxiproxy): each connection rolls a toxic's toxicity once, when they meet, and keeps the
outcome. Removing a toxic ends its effect on every connection at once (a timeout toxic's pending
close is cancelled, data flows again). Everything here runs on the proxy's one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import Callable

from taskmon.faultproxy.toxics import Toxic

_CHUNK = 32 * 1024


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
