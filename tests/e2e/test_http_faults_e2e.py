"""A client's retry path through HTTP faults: the fault proxy in front of one host loses the
service's answer (a 502 in its place, after the task was accepted), or holds it back past the
client's read timeout; the client retries with the same Idempotency-Key on the other host, as a
load balancer would send it. In Redis mode the key is shared: every key makes exactly one task,
whichever host answers. Memory mode is the negative case: the other host does not know the key
and accepts the task a second time.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from taskmon.faultproxy import FaultProxy
from taskmon.harness.client import wait_terminal
from taskmon.harness.processes import wait_until
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.stack import GunicornInstance
from taskmon.harness.toxiproxy_client import connect

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

KEYS = 6
ENV = {
    "TASKMON_ENGINE": "tone",
    "TASKMON_TONE_MS_PER_CHAR": "2",
    "TASKMON_CONCURRENCY_LIMIT": "4",
    "TASKMON_SSE_KEEPALIVE_S": "1",
}


def started_tasks(journal: Path) -> tuple[set[str], int]:
    """The tasks whose synthesis began (the journal's witness), and how many are still running."""
    started: set[str] = set()
    ended: set[str] = set()
    for path in journal.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            (started if event["event"] == "start" else ended).add(event["task"])
    return started, len(started - ended)


@contextlib.contextmanager
def two_hosts(root: Path, backend: str) -> Iterator[tuple[str, str, Any, Path]]:
    """Host A behind the fault proxy (its URL, the proxy), host B direct, one journal."""
    journal = root / "journal"
    env = {**ENV, "TASKMON_BACKEND": backend, "TASKMON_JOURNAL_DIR": str(journal)}
    with contextlib.ExitStack() as stack:
        if backend == "redis":
            redis = stack.enter_context(RedisServer(workdir=root / "redis"))
            env["TASKMON_REDIS_URL"] = redis.url
        host_a = stack.enter_context(GunicornInstance(workers=2, env=env, workdir=root / "a"))
        host_b = stack.enter_context(GunicornInstance(workers=2, env=env, workdir=root / "b"))
        ours = stack.enter_context(FaultProxy("127.0.0.1", 0, seed=3))
        proxy = connect(ours.url, timeout_s=5).create(
            upstream=f"127.0.0.1:{host_a.port}", name="host_a"
        )
        yield f"http://{proxy.listen}", host_b.base_url, proxy, journal


def submit_with_retry(first: str, second: str, key: str) -> tuple[list[int], Any]:
    """POST on `first`; on a 5xx or a timeout, the same request with the same key on
    `second`. The statuses seen, and the last answer's body."""
    body = {"text": f"retried request {key}"}
    headers = {"Idempotency-Key": key, "Connection": "close"}
    seen: list[int] = []
    # A short read timeout on the faulty host (the held answer is given up on); the retry
    # waits as long as a healthy answer may take.
    for base, timeout in ((first, 0.5), (second, 10.0)):
        try:
            answer = requests.post(f"{base}/api/tts", json=body, headers=headers, timeout=timeout)
        except requests.exceptions.Timeout:
            seen.append(0)
            continue
        seen.append(answer.status_code)
        if answer.status_code < 500:
            return seen, answer.json()
    return seen, None


def run_faults(first: str, second: str, proxy: Any) -> tuple[list[str], list[list[int]]]:
    """KEYS submissions whose first answer is lost: half replaced by a 502, half held back."""
    task_ids, statuses = [], []
    for number in range(KEYS):
        if number % 2 == 0:
            proxy.add_toxic(type="http_error", name="lost", stream="downstream",
                            attributes={"status": 502})  # fmt: skip
        else:
            proxy.add_toxic(type="slow_headers", name="lost", stream="downstream",
                            attributes={"delay": 1500})  # fmt: skip
        try:
            seen, body = submit_with_retry(first, second, f"key-{uuid.uuid4().hex}")
        finally:
            proxy.destroy_toxic("lost")
        statuses.append(seen)
        assert body is not None, f"no answer on either host: {seen}"
        task_ids.append(body["task_id"])
    return task_ids, statuses


def test_in_redis_mode_every_key_makes_exactly_one_task(tmp_path: Path) -> None:
    with two_hosts(tmp_path, "redis") as (first, second, proxy, journal):
        task_ids, statuses = run_faults(first, second, proxy)
        assert all(seen[0] in (502, 0) for seen in statuses), statuses
        assert all(seen[1] == 200 for seen in statuses), "the other host replays the key"
        ends = wait_terminal([second], task_ids, timeout=30)
        assert {end["state"] for end in ends.values()} == {"done"}
        wait_until(lambda: started_tasks(journal)[1] == 0 and len(started_tasks(journal)[0])
                   >= KEYS, timeout=30, what="every synthesis ended")  # fmt: skip
        started, _ = started_tasks(journal)
        assert started == set(task_ids), "one task per key, and only the one the client holds"


def test_in_memory_mode_a_retry_on_the_other_host_makes_a_second_task(tmp_path: Path) -> None:
    with two_hosts(tmp_path, "memory") as (first, second, proxy, journal):
        task_ids, statuses = run_faults(first, second, proxy)
        assert all(seen[1] == 202 for seen in statuses), "the other host accepts it anew"
        wait_until(lambda: len(started_tasks(journal)[0]) >= 2 * KEYS, timeout=30,
                   what="the lost first tasks ran too")  # fmt: skip
        started, _ = started_tasks(journal)
        assert len(started) == 2 * KEYS, "every key made two tasks"
        assert set(task_ids) < started
