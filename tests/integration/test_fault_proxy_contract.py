"""The fault proxy's contract: Toxiproxy 2.x's API and toxics, driven by toxiproxy-python.

Runs against a real Toxiproxy when TOXIPROXY_URL is set or `toxiproxy-server` is on PATH,
and against taskmon's own fault proxy otherwise; the traffic is real Redis traffic through the
proxy. Tests of what only ours adds (stats, durations) say so and skip on a real Toxiproxy.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

from taskmon.faultproxy import FaultProxy
from taskmon.harness.processes import ManagedProcess, free_port, wait_until
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.toxiproxy_client import connect

pytestmark = pytest.mark.redis

TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The control API's URL: a real Toxiproxy's where one is present, else ours."""
    if url := os.environ.get("TOXIPROXY_URL"):
        yield url.rstrip("/")
        return
    if binary := shutil.which("toxiproxy-server"):
        port = free_port()
        log = tmp_path_factory.mktemp("toxiproxy") / "toxiproxy.log"
        process = ManagedProcess([binary, "-host", "127.0.0.1", "-port", str(port)], log_path=log)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: _answers(url), timeout=20, what="toxiproxy-server's API")
            yield url
        finally:
            process.stop()
        return
    with FaultProxy("127.0.0.1", 0, seed=7) as ours:
        yield ours.url


@pytest.fixture(scope="module")
def is_ours(api: str) -> bool:
    return "taskmon" in requests.get(f"{api}/version", timeout=TIMEOUT_S).json()["version"]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(workdir=tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def proxy(api: str, upstream: RedisServer) -> Iterator[Any]:
    server = connect(api, timeout_s=TIMEOUT_S)
    name = f"redis_{uuid.uuid4().hex[:8]}"
    created = server.create(upstream=f"127.0.0.1:{upstream.port}", name=name)
    try:
        yield created
    finally:
        requests.delete(f"{api}/proxies/{name}", timeout=TIMEOUT_S)


def taskmon_command() -> list[str]:
    script = shutil.which("taskmon", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "taskmon.cli"]


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/version", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def through(proxy: Any, *, timeout: float = 1.0) -> redis.Redis:
    host, port = proxy.listen.rsplit(":", 1)
    # No retries: each fault must reach the caller, not be hidden by a reconnection.
    return redis.Redis(
        host=host,
        port=int(port),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def details(api: str, proxy: Any) -> dict[str, Any]:
    answer: dict[str, Any] = requests.get(f"{api}/proxies/{proxy.name}", timeout=TIMEOUT_S).json()
    return answer


def test_version_is_json_like_toxiproxys(api: str) -> None:
    answer = requests.get(f"{api}/version", timeout=TIMEOUT_S)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json()["version"].split(".")[0].isdigit()


def test_a_proxy_on_port_0_reports_the_port_it_got_and_forwards(proxy: Any) -> None:
    _, port = proxy.listen.rsplit(":", 1)
    assert int(port) > 0
    assert proxy.enabled is True
    client = through(proxy)
    assert client.ping() is True
    assert client.set("k", "v")
    assert client.get("k") == b"v"


def test_creating_a_proxy_twice_is_a_409_with_toxiproxys_body(api: str, proxy: Any) -> None:
    answer = requests.post(
        f"{api}/proxies",
        json={"name": proxy.name, "upstream": proxy.upstream, "listen": "127.0.0.1:0"},
        timeout=TIMEOUT_S,
    )
    assert answer.status_code == 409
    assert answer.json() == {"error": "proxy already exists", "status": 409}


def test_missing_things_are_404s_and_bad_bodies_400s(api: str, proxy: Any) -> None:
    missing = requests.get(f"{api}/proxies/no_such_proxy", timeout=TIMEOUT_S)
    assert (missing.status_code, missing.json()["error"]) == (404, "proxy not found")
    toxic = requests.get(f"{api}/proxies/{proxy.name}/toxics/nope", timeout=TIMEOUT_S)
    assert (toxic.status_code, toxic.json()["error"]) == (404, "toxic not found")
    bad = requests.post(f"{api}/proxies", data=b"{not json", timeout=TIMEOUT_S)
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("bad request body")
    no_upstream = requests.post(f"{api}/proxies", json={"name": "x"}, timeout=TIMEOUT_S)
    assert no_upstream.json() == {"error": "missing required field: upstream", "status": 400}
    kind = requests.post(
        f"{api}/proxies/{proxy.name}/toxics", json={"type": "nonsense"}, timeout=TIMEOUT_S
    )
    assert kind.json() == {"error": "invalid toxic type", "status": 400}
    stream = requests.post(
        f"{api}/proxies/{proxy.name}/toxics",
        json={"type": "latency", "stream": "sideways"},
        timeout=TIMEOUT_S,
    )
    assert stream.status_code == 400
    assert "upstream or downstream" in stream.json()["error"]


def test_browsers_are_refused(api: str) -> None:
    answer = requests.get(
        f"{api}/proxies", headers={"User-Agent": "Mozilla/5.0 (X11)"}, timeout=TIMEOUT_S
    )
    assert answer.status_code == 403


def test_disabling_cuts_open_connections_and_enabling_restores(proxy: Any) -> None:
    client = through(proxy)
    assert client.ping()
    with proxy.down():
        with pytest.raises(redis.ConnectionError):
            client.ping()
        with pytest.raises(redis.ConnectionError):
            through(proxy).ping()
    assert through(proxy).ping()


def test_latency_delays_each_answer_by_at_least_its_value(proxy: Any) -> None:
    client = through(proxy, timeout=5)
    client.ping()
    proxy.add_toxic(type="latency", attributes={"latency": 300})
    started = time.monotonic()
    client.ping()
    assert time.monotonic() - started >= 0.29, "an existing connection gets the toxic too"
    proxy.destroy_toxic("latency_downstream")
    assert proxy.toxics() == {}


def test_a_timeout_toxic_of_0_blackholes_until_removed(proxy: Any) -> None:
    client = through(proxy, timeout=0.5)
    proxy.add_toxic(type="timeout", name="blackhole", attributes={"timeout": 0})
    with pytest.raises(redis.TimeoutError):
        client.ping()
    proxy.destroy_toxic("blackhole")
    assert through(proxy).ping()


def test_a_timeout_toxic_closes_the_connection_after_its_timeout(proxy: Any) -> None:
    client = through(proxy, timeout=5)
    client.ping()
    proxy.add_toxic(type="timeout", stream="upstream", attributes={"timeout": 200})
    with pytest.raises(redis.ConnectionError):
        client.ping()


def test_reset_peer_resets_connections(proxy: Any) -> None:
    proxy.add_toxic(type="reset_peer", attributes={"timeout": 0})
    with pytest.raises(redis.ConnectionError):
        through(proxy).ping()


def test_limit_data_closes_after_its_bytes(proxy: Any) -> None:
    client = through(proxy)
    client.ping()  # connected first: the handshake's answers would count against the limit
    proxy.add_toxic(type="limit_data", attributes={"bytes": 10})
    client.set("big", "x" * 100)
    with pytest.raises(redis.ConnectionError):
        client.get("big")


def test_slicer_and_bandwidth_keep_the_bytes_intact(proxy: Any) -> None:
    client = through(proxy, timeout=5)
    value = os.urandom(20_000)
    client.set("blob", value)
    proxy.add_toxic(
        type="slicer", attributes={"average_size": 64, "size_variation": 32, "delay": 10}
    )
    proxy.add_toxic(type="bandwidth", stream="upstream", attributes={"rate": 1000})
    assert client.get("blob") == value


def test_toxicity_0_has_no_effect_at_all(api: str, proxy: Any, is_ours: bool) -> None:
    # A Toxiproxy release once reset connections at toxicity 0.
    proxy.add_toxic(type="reset_peer", toxicity=0.0, attributes={"timeout": 0})
    for _ in range(20):
        assert through(proxy).ping()
    if is_ours:
        (toxic,) = details(api, proxy)["toxics"]
        assert toxic["stats"] == {"connections_met": 20, "connections_hit": 0, "missed": 20}


def test_reset_removes_every_toxic_and_enables_every_proxy(api: str, proxy: Any) -> None:
    proxy.add_toxic(type="timeout", attributes={"timeout": 0})
    proxy.disable()
    assert requests.post(f"{api}/reset", timeout=TIMEOUT_S).status_code == 204
    assert details(api, proxy)["enabled"] is True
    assert details(api, proxy)["toxics"] == []
    assert through(proxy).ping()


def test_a_toxic_updates_its_attributes_and_toxicity(api: str, proxy: Any) -> None:
    proxy.add_toxic(type="latency", attributes={"latency": 10})
    answer = requests.patch(
        f"{api}/proxies/{proxy.name}/toxics/latency_downstream",
        json={"attributes": {"latency": 20}, "toxicity": 0.5},
        timeout=TIMEOUT_S,
    )
    assert answer.status_code == 200
    assert answer.json()["attributes"]["latency"] == 20
    assert answer.json()["toxicity"] == 0.5


def test_populate_creates_and_keeps_what_matches(api: str, upstream: RedisServer) -> None:
    name = f"pop_{uuid.uuid4().hex[:8]}"
    entry = {"name": name, "upstream": f"127.0.0.1:{upstream.port}", "listen": "127.0.0.1:0"}
    try:
        first = requests.post(f"{api}/populate", json=[entry], timeout=TIMEOUT_S)
        assert first.status_code == 201
        (created,) = first.json()["proxies"]
        assert created["name"] == name
        assert created["enabled"] is True
        host, port = created["listen"].rsplit(":", 1)
        assert redis.Redis(host=host, port=int(port), socket_timeout=1).ping()
    finally:
        requests.delete(f"{api}/proxies/{name}", timeout=TIMEOUT_S)


def test_traffic_is_counted_per_proxy_and_per_toxic(api: str, proxy: Any, is_ours: bool) -> None:
    if not is_ours:
        pytest.skip("stats are the fault proxy's own addition")
    proxy.add_toxic(type="latency", toxicity=1.0, attributes={"latency": 1})
    for _ in range(3):
        through(proxy).ping()
    stats = details(api, proxy)["stats"]
    assert stats["connections_total"] == 3
    assert stats["bytes_upstream"] > 0
    assert stats["bytes_downstream"] >= 3 * len(b"+PONG\r\n")
    (toxic,) = details(api, proxy)["toxics"]
    assert toxic["stats"]["connections_hit"] == 3


def test_a_toxic_with_a_duration_removes_itself(api: str, proxy: Any, is_ours: bool) -> None:
    if not is_ours:
        pytest.skip("durations are the fault proxy's own addition")
    answer = requests.post(
        f"{api}/proxies/{proxy.name}/toxics",
        json={"type": "timeout", "duration": 300, "attributes": {"timeout": 0}},
        timeout=TIMEOUT_S,
    )
    assert answer.status_code == 200
    assert answer.json()["duration"] == 300
    wait_until(lambda: details(api, proxy)["toxics"] == [], timeout=5, what="the toxic to expire")
    assert through(proxy).ping()


def test_the_cli_serves_the_api_for_any_client(tmp_path: Path, upstream: RedisServer) -> None:
    port = free_port()
    process = ManagedProcess(
        [*taskmon_command(), "fault-proxy", "--port", str(port)],
        log_path=tmp_path / "fault-proxy.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(url), timeout=20, what="taskmon fault-proxy's API")
        server = connect(url)
        created = server.create(upstream=f"127.0.0.1:{upstream.port}", name="cli_redis")
        assert through(created).ping()
        assert "cli_redis" in server.proxies()
    finally:
        process.stop()
