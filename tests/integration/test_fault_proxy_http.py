"""The fault proxy's HTTP toxics (ours alone: Toxiproxy has none), in front of a real HTTP
server on a real socket: an error answered instead of forwarding the request, an error in place
of the service's answer, headers held back, and toxicity 0 doing nothing.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from taskmon.faultproxy import FaultProxy
from taskmon.harness.processes import wait_until
from taskmon.harness.toxiproxy_client import connect

TIMEOUT_S = 5.0


class Upstream(ThreadingHTTPServer):
    daemon_threads = True
    received: list[bytes]


class Handler(BaseHTTPRequestHandler):
    server: Upstream
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append(body)
        answer = json.dumps({"got": len(body)}).encode()
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self) -> None:
        if self.path == "/endless":  # more than the kernel's socket buffers hold
            self.send_response(200)
            self.end_headers()
            chunk = b"y" * 65536
            try:
                for _ in range(1024):
                    self.wfile.write(chunk)
            except OSError:
                pass  # the proxy went away
            return
        answer = b"x" * 1_000_000  # many chunks through the proxy
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream(("127.0.0.1", 0), Handler)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def proxy(upstream: Upstream) -> Iterator[tuple[Any, str]]:
    with FaultProxy("127.0.0.1", 0, seed=11) as ours:
        port = upstream.server_address[1]
        made = connect(ours.url, timeout_s=TIMEOUT_S).create(
            upstream=f"127.0.0.1:{port}", name="service"
        )
        made.api_url = ours.url  # for the calls toxiproxy-python does not make
        yield made, f"http://{made.listen}"


def post(url: str, body: bytes = b'{"text": "hello"}', timeout: float = TIMEOUT_S) -> Any:
    return requests.post(f"{url}/api/tts", data=body, timeout=timeout,
                         headers={"Content-Type": "application/json"})  # fmt: skip


def toxic_stats(proxy: Any, name: str) -> dict[str, int]:
    answer = requests.get(
        f"{proxy.api_url}/proxies/{proxy.name}/toxics/{name}", timeout=TIMEOUT_S
    ).json()
    return dict(answer["stats"])


def test_an_error_upstream_answers_in_the_services_place(
    proxy: tuple[Any, str], upstream: Upstream
) -> None:
    made, url = proxy
    made.add_toxic(type="http_error", name="refuse", stream="upstream", toxicity=1.0,
                   attributes={"status": 503})  # fmt: skip
    answer = post(url, body=b'{"text": "' + b"x" * 100_000 + b'"}')  # a body in many chunks
    assert answer.status_code == 503
    assert answer.headers["X-Fault-Injected"] == "refuse"
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.json()["status"] == 503
    assert upstream.received == [], "the service never saw the request"
    assert toxic_stats(made, "refuse")["connections_hit"] == 1


def test_an_error_downstream_replaces_the_answer_of_a_service_that_acted(
    proxy: tuple[Any, str], upstream: Upstream
) -> None:
    made, url = proxy
    made.add_toxic(type="http_error", name="lose", stream="downstream", toxicity=1.0,
                   attributes={"status": 502})  # fmt: skip
    answer = post(url)
    assert answer.status_code == 502
    assert answer.headers["X-Fault-Injected"] == "lose"
    assert answer.headers["X-Fault-Replaced"] == "202", "what the service had answered"
    assert upstream.received == [b'{"text": "hello"}'], "the service got it and answered"
    made.destroy_toxic("lose")
    assert post(url).status_code == 202, "gone with its toxic"


def test_slow_headers_hold_the_answer_back(proxy: tuple[Any, str], upstream: Upstream) -> None:
    made, url = proxy
    made.add_toxic(type="slow_headers", name="slow", stream="downstream", toxicity=1.0,
                   attributes={"delay": 800})  # fmt: skip
    with pytest.raises(requests.exceptions.ReadTimeout):
        post(url, timeout=0.3)  # a client with a short read timeout gives up
    started = time.monotonic()
    assert post(url).status_code == 202
    assert time.monotonic() - started >= 0.8, "held back by at least its delay"
    assert len(upstream.received) == 2, "both requests reached the service"


def test_toxicity_0_has_no_effect(proxy: tuple[Any, str], upstream: Upstream) -> None:
    made, url = proxy
    made.add_toxic(type="http_error", name="never", stream="downstream", toxicity=0.0)
    for _ in range(5):
        assert post(url).status_code == 202
    stats = toxic_stats(made, "never")
    assert stats["connections_hit"] == 0
    assert stats["connections_met"] >= 1


def test_an_error_status_outside_4xx_and_5xx_is_refused(proxy: tuple[Any, str]) -> None:
    made, _ = proxy
    answer = requests.post(
        f"{made.api_url}/proxies/{made.name}/toxics",
        json={"type": "http_error", "attributes": {"status": 200}},
        timeout=TIMEOUT_S,
    )
    assert answer.status_code == 400
    assert "status" in answer.json()["error"]


def test_slow_headers_hold_each_answer_once_not_each_chunk(
    proxy: tuple[Any, str], upstream: Upstream
) -> None:
    made, url = proxy
    made.add_toxic(type="slow_headers", name="slow", stream="downstream", toxicity=1.0,
                   attributes={"delay": 300})  # fmt: skip
    with requests.Session() as session:  # one kept-alive connection, two answers
        for _ in range(2):
            started = time.monotonic()
            answer = session.get(f"{url}/big", timeout=TIMEOUT_S)
            assert len(answer.content) == 1_000_000
            took = time.monotonic() - started
            assert took >= 0.3, "each answer's head is held"
            assert took < 3.0, "but not each of its chunks"


def test_removing_slow_headers_ends_its_hold(proxy: tuple[Any, str], upstream: Upstream) -> None:
    made, url = proxy
    made.add_toxic(type="slow_headers", name="slow", stream="downstream", toxicity=1.0,
                   attributes={"delay": 4000})  # fmt: skip
    timer = threading.Timer(0.3, made.destroy_toxic, args=("slow",))
    timer.start()
    started = time.monotonic()
    try:
        assert post(url).status_code == 202
    finally:
        timer.join()
    assert time.monotonic() - started < 3.0, "released when the toxic went"


def test_an_error_upstream_answers_a_client_waiting_for_100_continue(
    proxy: tuple[Any, str], upstream: Upstream
) -> None:
    made, url = proxy
    made.add_toxic(type="http_error", name="refuse", stream="upstream", toxicity=1.0)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
        sock.sendall(b"POST /api/tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 2000000\r\nExpect: 100-continue\r\n\r\n")  # fmt: skip
        started = time.monotonic()
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 503 "), answer[:40]
    assert time.monotonic() - started < 2.0, "answered without waiting for the body"
    assert upstream.received == []


def test_an_error_upstream_reads_a_chunked_body_before_answering(
    proxy: tuple[Any, str], upstream: Upstream
) -> None:
    made, url = proxy
    made.add_toxic(type="http_error", name="refuse", stream="upstream", toxicity=1.0)

    def body() -> Iterator[bytes]:
        for _ in range(3):
            time.sleep(0.1)  # in pieces, later than the head
            yield b'{"text": "hi"}'

    answer = requests.post(f"{url}/api/tts", data=body(), timeout=TIMEOUT_S)
    assert answer.status_code == 503
    assert answer.headers["X-Fault-Injected"] == "refuse"


def test_no_socket_is_left_open_when_a_removed_proxy_still_flushes_to_a_slow_reader(
    upstream: Upstream,
) -> None:
    # A client that reads nothing of a 1 MB answer: the proxy's end towards it holds
    # buffered bytes, so a close waits for a read that never comes. Removing the proxy and
    # stopping the fault proxy must still close that socket, not leave it to the garbage
    # collector (ResourceWarning: unclosed transport).
    ours = FaultProxy("127.0.0.1", 0, seed=5).start()
    reader = socket.socket()
    try:
        made = connect(ours.url, timeout_s=TIMEOUT_S).create(
            upstream=f"127.0.0.1:{upstream.server_address[1]}", name="slow-reader"
        )
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = made.listen.rsplit(":", 1)
        reader.connect((host, int(port)))
        reader.sendall(b"GET /endless HTTP/1.1\r\nHost: upstream\r\n\r\n")

        def buffered() -> int:
            answer = requests.get(f"{ours.url}/proxies/slow-reader", timeout=TIMEOUT_S).json()
            return int(answer["stats"]["bytes_buffered"])

        wait_until(lambda: buffered() > 0, timeout=10, what="bytes buffered in the proxy")
        removed = requests.delete(f"{ours.url}/proxies/slow-reader", timeout=TIMEOUT_S)
        assert removed.status_code == 204
    finally:
        ours.stop()
        reader.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


def test_a_socket_no_proxy_tracks_is_still_closed_at_shutdown(upstream: Upstream) -> None:
    # What a connection's owner can lose (an open that raced a cancel): a socket of the
    # proxy's event loop that no proxy knows of. The shutdown closes it all the same.
    ours = FaultProxy("127.0.0.1", 0, seed=7).start()
    try:
        opening = asyncio.open_connection("127.0.0.1", upstream.server_address[1])
        lost = asyncio.run_coroutine_threadsafe(opening, ours._loop).result(TIMEOUT_S)
    finally:
        ours.stop()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del lost  # its writer warns if the socket under it is still open
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []
