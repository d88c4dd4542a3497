"""Open SSE streams while Redis is cut under a real `gunicorn -w 4`: a stream on the worker
that runs the task goes on from that worker's memory to the terminal state; a stream on any
other worker ends with one `event: degraded` message; both end cleanly (the server closes
them), never a broken connection. Before the failover layer such a stream broke off after
about 15 s with a traceback in the log and no event."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis

from taskmon.harness.processes import wait_until
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.sse_client import SSEStream, read_stream
from taskmon.harness.stack import GunicornInstance
from tests.support.http import PinnedClient
from tests.support.stacks import paused, redis_mode_env

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


def other_worker(host: GunicornInstance, than: str) -> PinnedClient:
    """A connection pinned to any worker but `than` (host:pid), which is paused for the one
    request that pins it (see `paused`): the kernel picks the worker that accepts."""
    client = PinnedClient(host.base_url)
    try:
        client.connection.timeout = 0.5
        with paused(host, than, at_most_s=1.0):  # leases of 2 s here
            client.request("GET", "/healthz")
        assert client.connection.sock is not None
        client.connection.sock.settimeout(30)
        assert than not in client.workers_seen, "a stopped worker accepted a connection"
    except BaseException:
        client.close()
        raise
    return client


def test_open_streams_go_on_or_end_cleanly_when_redis_is_cut(tmp_path: Path) -> None:
    env = redis_mode_env("", tmp_path / "journal", limit=2, lease_ttl_ms=2000, ms_per_char=100)
    with RedisServer(workdir=tmp_path / "redis") as server:
        env |= {"TASKMON_REDIS_URL": server.url, "TASKMON_SSE_KEEPALIVE_S": "1"}
        with GunicornInstance(workers=4, env=env, workdir=tmp_path / "host") as host:
            owner = PinnedClient(host.base_url)
            elsewhere: PinnedClient | None = None
            try:
                status, body = owner.json("POST", "/api/tts", {"text": "six seconds" * 5})
                assert status == 202
                task_id = body["task_id"]
                (owner_id,) = owner.workers_seen
                elsewhere = other_worker(host, owner_id)
                streams: dict[str, SSEStream] = {}

                errors: dict[str, BaseException] = {}

                def follow(name: str, client: PinnedClient) -> None:
                    try:
                        streams[name] = read_stream(
                            host.base_url, f"/api/task/stream/{task_id}", timeout=40,
                            connection=client.connection,
                        )  # fmt: skip
                    except Exception as exc:  # a broken stream: reported below, by name
                        errors[name] = exc

                readers = [
                    threading.Thread(target=follow, args=("owner", owner), daemon=True),
                    threading.Thread(target=follow, args=("elsewhere", elsewhere), daemon=True),
                ]
                for reader in readers:
                    reader.start()
                wait_until(lambda: server_has_subscribers(server), timeout=10, what="streams on")
                server.stop_for_now()
                for reader in readers:
                    reader.join(timeout=45)
                server.start()
            finally:
                owner.close()
                if elsewhere is not None:
                    elsewhere.close()
            log = host.log_tail(100_000)

    assert not errors, f"a stream broke: {errors}"
    mine, theirs = streams["owner"], streams["elsewhere"]
    assert mine.ended, "the server closed the stream"
    assert [m.event for m in mine.messages][-1] == "state"
    assert mine.messages[-1].json()["state"] == "done", "went on to the end from memory"
    assert theirs.ended, "the server closed the stream"
    assert theirs.messages[-1].event == "degraded"
    assert theirs.messages[-1].json()["degraded"] is True
    assert [m.event for m in theirs.messages[:-1]] == ["state"] * (len(theirs.messages) - 1)
    assert "Traceback" not in log


def server_has_subscribers(server: RedisServer) -> bool:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        channels = client.pubsub_channels("*events*")
        return len(channels) >= 1 and int(client.pubsub_numsub(*channels)[0][1]) >= 2
    finally:
        client.close()
