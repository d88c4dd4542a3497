"""The workers list and the admin routes of a worker that loses Redis: the Flask app over a
real runtime on a real redis-server that is stopped under it, beside another worker's runtime.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from taskmon.app import create_app
from taskmon.harness.redis_server import RedisServer
from taskmon.web.context import runtime_of
from tests.support.failover_rig import KEYS, MakeRuntime
from tests.support.timing import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("clean_taskmon_env")]

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def app(own_redis: RedisServer, tmp_path: Path) -> Iterator[Flask]:
    made = create_app({
        "backend": "redis", "redis_url": own_redis.url, "key_prefix": KEYS.prefix,
        "engine": "tone", "tone_ms_per_char": 0, "result_dir": tmp_path / "results",
        "admin_token": TOKEN,
    })  # fmt: skip
    yield made
    runtime_of(made).close(wait=True)


def listing(app: Flask) -> Any:
    return app.test_client().get("/api/monitor/workers").json


def test_a_degraded_worker_lists_itself_live_and_says_so(
    own_redis: RedisServer, app: Flask, make_runtime: MakeRuntime
) -> None:
    me = runtime_of(app).worker_id
    other = make_runtime("other:1")
    both = sorted([me, other.worker_id])
    wait_for(lambda: [w["worker"] for w in listing(app)["workers"]] == both, timeout=10,
             message="both workers listed")  # fmt: skip
    assert (listing(app)["scope"], listing(app)["degraded"]) == ("global", False)

    own_redis.stop_for_now()
    wait_for(lambda: listing(app)["degraded"], timeout=10, message="degraded")
    body = listing(app)
    assert body["scope"] == "worker"
    [entry] = body["workers"]
    assert (entry["worker"], entry["backend"], entry["degraded"]) == (me, "memory", True)
    client = app.test_client()
    assert (
        client.post(f"/api/admin/workers/{other.worker_id}/drain", headers=AUTH).status_code == 503
    )
    permits = client.get("/api/admin/permits", headers=AUTH).json
    assert permits is not None
    assert (permits["scope"], permits["degraded"], permits["waiters"]) == ("worker", True, [])
    assert client.delete("/api/admin/permits/nothing-held", headers=AUTH).status_code == 404

    own_redis.start()
    wait_for(lambda: not listing(app)["degraded"], timeout=15, message="re-promoted")
    wait_for(lambda: [w["worker"] for w in listing(app)["workers"]] == both, timeout=10,
             message="both workers listed again")  # fmt: skip
