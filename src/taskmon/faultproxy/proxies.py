"""Proxies and their collection, as Toxiproxy 2.x keeps them. Runs on the proxy's event loop.

A proxy listens on `listen` ("host:0" picks a free port, reported back as the real one) and
opens one upstream connection per client connection. Disabling it closes the listener and every
open connection; enabling it listens again on the same address. Traffic is counted per proxy
(connections, bytes each way) and per toxic (connections met and hit), so a run can prove that
its faults went through the proxy rather than trust it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from typing import Any

from taskmon.faultproxy.errors import (
    PROXY_EXISTS,
    PROXY_NOT_FOUND,
    TOXIC_EXISTS,
    TOXIC_NOT_FOUND,
    ApiError,
    missing_field,
)
from taskmon.faultproxy.links import Link
from taskmon.faultproxy.toxics import Toxic, bad_body, parse_toxic, update_toxic

_CONNECT_TIMEOUT_S = 5.0


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ApiError(f"invalid address {address!r}: want host:port", 400)
    return host or "127.0.0.1", int(port)


class Proxy:
    def __init__(self, name: str, listen: str, upstream: str, rng: random.Random) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.toxics: list[Toxic] = []
        self._links: set[Link] = set()
        # Every connection's two ends, from the moment asyncio accepts (or opens) it: a task
        # that has not run yet, or one still opening its upstream, must not leave a socket
        # open when the proxy is disabled or the loop shut down.
        self._ends: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._rng = rng
        self._expiries: dict[str, asyncio.TimerHandle] = {}
        self.connections_total = 0
        self.bytes = {"upstream": 0, "downstream": 0}

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [toxic.as_json() for toxic in self.toxics],
            "stats": {
                "connections_total": self.connections_total,
                "connections_active": len(self._links),
                "bytes_upstream": self.bytes["upstream"],
                "bytes_downstream": self.bytes["downstream"],
                "bytes_buffered": self.buffered_bytes(),
            },
        }

    async def start(self) -> None:
        if self._server is not None:
            return
        host, port = split_address(self.listen)
        try:
            self._server = await asyncio.start_server(self._accepted, host, port)
        except OSError as exc:
            # Toxiproxy answers a bind failure with its Go error and a 500.
            raise ApiError(f"listen tcp {host}:{port}: bind: {exc.strerror}", 500) from exc
        sockname = self._server.sockets[0].getsockname()
        self.listen = f"{sockname[0]}:{sockname[1]}"
        self.enabled = True

    async def stop(self) -> None:
        """Stop listening and close every open connection (a FIN each way, as Toxiproxy)."""
        self.enabled = False
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self._links):
            link.close()
        for end in list(self._ends):
            end.close()

    def open_ends(self) -> int:
        """How many connection ends are open or still flushing (closed ones are forgotten)."""
        self._ends = {
            end for end in self._ends
            if not (end.is_closing() and end.transport.get_write_buffer_size() == 0)
        }  # fmt: skip
        return len(self._ends)

    def buffered_bytes(self) -> int:
        """Bytes read from one side and not yet handed to the other's socket (a slow reader)."""
        return sum(end.transport.get_write_buffer_size() for end in self._ends)

    def abort(self) -> None:
        """Drop every connection's sockets at once, written data or not: for a shutdown, where
        a close that waits for a peer to read its buffer would outlive the event loop."""
        for end in list(self._ends):
            end.transport.abort()

    async def update(self, body: dict[str, Any]) -> None:
        listen = body.get("listen", self.listen)
        upstream = body.get("upstream", self.upstream)
        enabled = body.get("enabled", self.enabled)
        if not isinstance(listen, str) or not isinstance(upstream, str):
            raise bad_body("listen and upstream must be strings")
        if not isinstance(enabled, bool):
            raise bad_body("enabled must be true or false")
        if listen != self.listen or upstream != self.upstream:
            await self.stop()
            self.listen, self.upstream = listen, upstream
        if enabled:
            await self.start()
        else:
            await self.stop()

    def add_toxic(self, body: object) -> Toxic:
        toxic = parse_toxic(body)
        if any(t.name == toxic.name for t in self.toxics):
            raise TOXIC_EXISTS
        self.toxics.append(toxic)
        for link in self._links:
            link.meet(toxic)
        if toxic.duration_ms is not None:
            loop = asyncio.get_running_loop()
            self._expiries[toxic.name] = loop.call_later(
                toxic.duration_ms / 1000, self._expire, toxic
            )
        return toxic

    def toxic(self, name: str) -> Toxic:
        for toxic in self.toxics:
            if toxic.name == name:
                return toxic
        raise TOXIC_NOT_FOUND

    def update_toxic(self, name: str, body: object) -> Toxic:
        toxic = self.toxic(name)
        update_toxic(toxic, body)
        return toxic

    def remove_toxic(self, name: str) -> None:
        toxic = self.toxic(name)
        self.toxics.remove(toxic)
        expiry = self._expiries.pop(name, None)
        if expiry is not None:
            expiry.cancel()
        for link in self._links:
            link.forget(toxic)

    def reset_toxics(self) -> None:
        for toxic in list(self.toxics):
            self.remove_toxic(toxic.name)

    def _expire(self, toxic: Toxic) -> None:
        if toxic in self.toxics:
            self.remove_toxic(toxic.name)

    def _count(self, stream: str, size: int) -> None:
        self.bytes[stream] += size

    def _accepted(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Coroutine[Any, Any, None]:
        # Called by asyncio as the connection is made, before its task runs: from here on
        # stop() and abort() reach this socket.
        self.open_ends()  # forget the ends closed since the last connection
        self._ends.add(writer)
        return self._accept(reader, writer)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_total += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            host, port = split_address(self.upstream)
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 a wait_for cancelled as the
                # connection completes loses it, and its socket is left to the GC.
                async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                    server = await asyncio.open_connection(host, port)
            except (OSError, TimeoutError):
                return  # like Toxiproxy: the client sees its connection closed
            upstream = server[1]
            self._ends.add(upstream)
            if writer.is_closing():
                return  # disabled while the upstream connection was opening
            link = Link(
                (reader, writer), server, toxics=lambda: self.toxics, count=self._count,
                rng=self._rng,
            )  # fmt: skip
            self._links.add(link)
            try:
                await link.run()
            finally:
                self._links.discard(link)
        except asyncio.CancelledError:
            # Only the shutdown cancels a connection's task, and nothing awaits it: ending it
            # quietly spares asyncio's done-callback a logged CancelledError per connection.
            return
        finally:
            for end in (writer, upstream):
                if end is not None:
                    end.close()
                    # Data still buffered for a peer that does not read keeps the socket
                    # open until it is read: stay tracked, for abort() at a shutdown.
                    if end.transport.get_write_buffer_size() == 0:
                        self._ends.discard(end)


class ProxyCollection:
    def __init__(self, seed: int | None = None) -> None:
        self._proxies: dict[str, Proxy] = {}
        # Proxies removed (or replaced) with connections still flushing to a peer that does
        # not read: close() drops those sockets too.
        self._removed: list[Proxy] = []
        self._rng = random.Random(seed)  # noqa: S311 - toxicity rolls, not secrets

    def all(self) -> dict[str, Proxy]:
        return dict(self._proxies)

    def get(self, name: str) -> Proxy:
        try:
            return self._proxies[name]
        except KeyError:
            raise PROXY_NOT_FOUND from None

    async def create(self, body: object) -> Proxy:
        if not isinstance(body, dict):
            raise bad_body("json: cannot unmarshal into a proxy")
        name, upstream = body.get("name"), body.get("upstream")
        if not isinstance(name, str) or not name:
            raise missing_field("name")
        if not isinstance(upstream, str) or not upstream:
            raise missing_field("upstream")
        listen = body.get("listen") or "127.0.0.1:0"
        enabled = body.get("enabled", True)
        if not isinstance(listen, str) or not isinstance(enabled, bool):
            raise bad_body("listen must be a string and enabled true or false")
        if name in self._proxies:
            raise PROXY_EXISTS
        split_address(upstream)
        proxy = Proxy(name, listen, upstream, self._rng)
        # Atomic with its toxics: a create that carries toxics applies them before it listens,
        # so no connection ever passes unpoisoned.
        for toxic in body.get("toxics") or []:
            proxy.add_toxic(toxic)
        if enabled:
            await proxy.start()
        self._proxies[name] = proxy
        return proxy

    async def remove(self, name: str) -> None:
        proxy = self.get(name)
        await proxy.stop()
        del self._proxies[name]
        if proxy.open_ends():
            self._removed.append(proxy)  # its buffered ends, for close() to drop

    async def populate(self, body: object) -> list[Proxy]:
        """Create or replace each proxy of the list (Toxiproxy's /populate)."""
        if not isinstance(body, list):
            raise bad_body("json: cannot unmarshal object into a list of proxies")
        created = []
        for entry in body:
            if not isinstance(entry, dict):
                raise bad_body("json: cannot unmarshal into a proxy")
            existing = self._proxies.get(str(entry.get("name")))
            if existing is not None:
                same = existing.upstream == entry.get("upstream") and entry.get("listen") in (
                    None,
                    existing.listen,
                )
                if same:
                    created.append(existing)
                    continue
                await self.remove(existing.name)
            created.append(await self.create(entry))
        return created

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic (Toxiproxy's /reset)."""
        for proxy in self._proxies.values():
            await proxy.start()
            proxy.reset_toxics()

    async def close(self) -> None:
        """Stop every proxy and drop its connections' sockets (for a shutdown)."""
        for proxy in [*self._proxies.values(), *self._removed]:
            await proxy.stop()
            proxy.abort()
        self._removed = [p for p in self._removed if p.open_ends()]
