"""The fault proxy: Toxiproxy 2.x's HTTP control API over proxies run on one event loop.

Any Toxiproxy client (toxiproxy-python, the Go, Ruby and Node ones) drives it unchanged: the
routes, status codes, error bodies ({"error", "status"} as text/plain, like Go's http.Error),
`/version`, the 403 for browsers and ephemeral `listen` ports are Toxiproxy's. Additions a
Toxiproxy client ignores: `stats` on proxies and toxics, `duration` on toxics, `toxics` in a
proxy create (the proxy and its toxics made atomically).

The HTTP side is the standard library's threading server; each request hands its work to the
loop and waits at most _CALL_TIMEOUT_S, so a wedged loop gives a 500, never a hung client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import re
import threading
from collections.abc import Callable, Coroutine
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from taskmon.faultproxy.errors import ApiError
from taskmon.faultproxy.proxies import ProxyCollection

log = logging.getLogger(__name__)

# The Toxiproxy release whose API this one follows.
TOXIPROXY_API_VERSION = "2.12.0"
VERSION = f"{TOXIPROXY_API_VERSION}-taskmon"
_CALL_TIMEOUT_S = 10.0

Handler = Callable[[ProxyCollection, dict[str, str], Any], Coroutine[Any, Any, tuple[int, Any]]]


async def _index(c: ProxyCollection, _: dict[str, str], __: Any) -> tuple[int, Any]:
    return 200, {name: proxy.as_json() for name, proxy in c.all().items()}


async def _create(c: ProxyCollection, _: dict[str, str], body: Any) -> tuple[int, Any]:
    return 201, (await c.create(body)).as_json()


async def _populate(c: ProxyCollection, _: dict[str, str], body: Any) -> tuple[int, Any]:
    return 201, {"proxies": [proxy.as_json() for proxy in await c.populate(body)]}


async def _reset(c: ProxyCollection, _: dict[str, str], __: Any) -> tuple[int, Any]:
    await c.reset()
    return 204, None


async def _show(c: ProxyCollection, v: dict[str, str], _: Any) -> tuple[int, Any]:
    return 200, c.get(v["proxy"]).as_json()


async def _update(c: ProxyCollection, v: dict[str, str], body: Any) -> tuple[int, Any]:
    proxy = c.get(v["proxy"])
    if not isinstance(body, dict):
        raise ApiError("bad request body: json: cannot unmarshal into a proxy", 400)
    await proxy.update(body)
    return 200, proxy.as_json()


async def _delete(c: ProxyCollection, v: dict[str, str], _: Any) -> tuple[int, Any]:
    await c.remove(v["proxy"])
    return 204, None


async def _toxics(c: ProxyCollection, v: dict[str, str], _: Any) -> tuple[int, Any]:
    return 200, [toxic.as_json() for toxic in c.get(v["proxy"]).toxics]


async def _toxic_create(c: ProxyCollection, v: dict[str, str], body: Any) -> tuple[int, Any]:
    return 200, c.get(v["proxy"]).add_toxic(body).as_json()  # 200, not 201: Toxiproxy's


async def _toxic_show(c: ProxyCollection, v: dict[str, str], _: Any) -> tuple[int, Any]:
    return 200, c.get(v["proxy"]).toxic(v["toxic"]).as_json()


async def _toxic_update(c: ProxyCollection, v: dict[str, str], body: Any) -> tuple[int, Any]:
    return 200, c.get(v["proxy"]).update_toxic(v["toxic"], body).as_json()


async def _toxic_delete(c: ProxyCollection, v: dict[str, str], _: Any) -> tuple[int, Any]:
    c.get(v["proxy"]).remove_toxic(v["toxic"])
    return 204, None


_NAME = r"(?P<{}>[^/]+)"
ROUTES: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
    (re.compile(r"/reset"), {"POST": _reset}),
    (re.compile(r"/proxies"), {"GET": _index, "POST": _create}),
    (re.compile(r"/populate"), {"POST": _populate}),
    (
        re.compile(r"/proxies/" + _NAME.format("proxy")),
        {"GET": _show, "POST": _update, "PATCH": _update, "DELETE": _delete},
    ),
    (
        re.compile(r"/proxies/" + _NAME.format("proxy") + "/toxics"),
        {"GET": _toxics, "POST": _toxic_create},
    ),
    (
        re.compile(r"/proxies/" + _NAME.format("proxy") + "/toxics/" + _NAME.format("toxic")),
        {
            "GET": _toxic_show,
            "POST": _toxic_update,
            "PATCH": _toxic_update,
            "DELETE": _toxic_delete,
        },
    ),
]


class FaultProxy:
    """Start with `start()`; `url` is the control API's base. `stop()` closes everything."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 8474, *, seed: int | None = None
    ) -> None:
        self._address = (host, port)
        self.proxies = ProxyCollection(seed)
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="fault-proxy-loop", daemon=True
        )
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._http is None:
            raise RuntimeError("start() the fault proxy first")
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultProxy:
        self._loop_thread.start()
        self._http = ThreadingHTTPServer(self._address, _handler_for(self))
        self._http.daemon_threads = True
        self._http_thread = threading.Thread(
            target=self._http.serve_forever, name="fault-proxy-api", daemon=True
        )
        self._http_thread.start()
        return self

    def stop(self) -> None:
        """Stop the API, close every proxy and link, then the event loop itself (its own
        sockets too). Safe to call twice, and on a proxy never started."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._shut_down(), self._loop).result(
                    _CALL_TIMEOUT_S
                )
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._loop_thread.join(_CALL_TIMEOUT_S)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()

    async def _shut_down(self) -> None:
        # Every socket closed and every task ended before the loop stops: a connection
        # task left pending, or a close still queued, would leave its socket to the garbage
        # collector (ResourceWarning: unclosed transport) long after the proxy is gone.
        await self.proxies.close()
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.proxies.close()  # what a task opened while it was being cancelled
        # And whatever socket this loop still has open that no proxy tracks (one whose owner
        # lost it to a race with a cancel): every selector transport the loop made is in its
        # registry (private, hence the getattr), and left open it would outlive the loop.
        for transport in list(getattr(self._loop, "_transports", {}).values()):
            transport.abort()
        for _ in range(2):
            await asyncio.sleep(0)  # the transports' queued connection_lost callbacks

    def call(self, handler: Handler, variables: dict[str, str], body: Any) -> tuple[int, Any]:
        future: concurrent.futures.Future[tuple[int, Any]] = asyncio.run_coroutine_threadsafe(
            handler(self.proxies, variables, body), self._loop
        )
        try:
            return future.result(_CALL_TIMEOUT_S)
        except TimeoutError:
            future.cancel()
            raise ApiError("the fault proxy's event loop did not answer in time", 500) from None
        except concurrent.futures.CancelledError:
            # A call still running when stop() ends every task on the loop.
            raise ApiError("the fault proxy is shutting down", 503) from None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _handler_for(fault_proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class ApiHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "taskmon-fault-proxy"

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PATCH(self) -> None:
            self._dispatch("PATCH")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def _dispatch(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            if self.headers.get("User-Agent", "").startswith("Mozilla/"):
                # Toxiproxy refuses browsers, so a web page cannot drive it (CSRF).
                return self._send(403, b"User agent not allowed\n", "text/plain; charset=utf-8")
            if path == "/version" and method == "GET":
                body = json.dumps({"version": VERSION}) + "\n"
                return self._send(200, body.encode(), "application/json;charset=utf-8")
            for pattern, methods in ROUTES:
                match = pattern.fullmatch(path)
                if match is None:
                    continue
                handler = methods.get(method)
                if handler is None:
                    return self._send(405, b"", "text/plain; charset=utf-8")
                try:
                    body = json.loads(raw) if raw.strip() else {}
                except ValueError as exc:
                    return self._error(ApiError(f"bad request body: {exc}", 400))
                try:
                    status, answer = fault_proxy.call(handler, match.groupdict(), body)
                except ApiError as exc:
                    return self._error(exc)
                if answer is None:
                    return self._send(status, b"", None)
                return self._send(status, json.dumps(answer).encode(), "application/json")
            return self._send(404, b"404 page not found\n", "text/plain; charset=utf-8")

        def _error(self, error: ApiError) -> None:
            self._send(error.status, error.body(), "text/plain; charset=utf-8")

        def _send(self, status: int, body: bytes, content_type: str | None) -> None:
            self.send_response(status)
            if content_type is not None:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return ApiHandler
