"""Invariants I1-I5 and I7 on real processes: two `gunicorn -w 4` instances (two "hosts")
sharing one real redis-server, and the same checks flagging memory mode, their negative case.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from taskmon.harness.client import call, submit_many, wait_terminal
from taskmon.harness.journal_check import check_cap
from taskmon.harness.monotonic import monotonic_violations, stream_violations
from taskmon.harness.processes import wait_until
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.sse_client import SSEStream, read_stream
from taskmon.harness.stack import GunicornInstance
from taskmon.harness.visibility import probe_visibility

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

LIMIT = 3
COMMON_ENV = {
    "TASKMON_ENGINE": "tone",
    "TASKMON_TONE_MS_PER_CHAR": "4",
    "TASKMON_CONCURRENCY_LIMIT": str(LIMIT),
    "TASKMON_SSE_KEEPALIVE_S": "1",
    "TASKMON_LEASE_TTL_MS": "3000",
}


@dataclass
class Deployment:
    hosts: list[GunicornInstance]
    journal: Path

    @property
    def urls(self) -> list[str]:
        return [host.base_url for host in self.hosts]


@pytest.fixture(scope="module")
def redis_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("redis-deployment")
    with RedisServer(workdir=root / "redis") as server:
        env = {
            **COMMON_ENV,
            "TASKMON_BACKEND": "redis",
            "TASKMON_REDIS_URL": server.url,
            "TASKMON_JOURNAL_DIR": str(root / "journal"),
        }
        with (
            GunicornInstance(workers=4, env=env, workdir=root / "host-a") as host_a,
            GunicornInstance(workers=4, env=env, workdir=root / "host-b") as host_b,
        ):
            yield Deployment([host_a, host_b], root / "journal")


@pytest.fixture(scope="module")
def memory_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("memory-deployment")
    env = {**COMMON_ENV, "TASKMON_BACKEND": "memory", "TASKMON_JOURNAL_DIR": str(root / "j")}
    with GunicornInstance(workers=4, env=env, workdir=root / "host") as host:
        yield Deployment([host], root / "j")


def _run_load(deployment: Deployment, count: int = 30) -> list[str]:
    answers = submit_many(deployment.urls, [f"load {n} " + "x" * 90 for n in range(count)])
    assert all(a.status == 202 for a in answers), [a.status for a in answers]
    return [a.body["task_id"] for a in answers]


# -- I1 the cap, judged from the journal -------------------------------------------------------


def test_i1_cap_holds_across_hosts(redis_deployment: Deployment) -> None:
    task_ids = _run_load(redis_deployment)
    final = wait_terminal(redis_deployment.urls, task_ids, timeout=120)
    assert {body["state"] for body in final.values()} == {"done"}
    report = check_cap(redis_deployment.journal)
    assert report.files >= 2, "syntheses ran in several workers"
    assert not report.violates(LIMIT), report.summary(LIMIT)
    assert report.peak == LIMIT, f"the load should fill the cap: {report.summary(LIMIT)}"
    assert not report.unmatched_starts


def test_i1_checker_flags_memory_mode(memory_deployment: Deployment) -> None:
    task_ids = _run_load(memory_deployment)
    # Memory mode: only the accepting worker knows a task, so poll each on its own worker.
    wait_for_journal_ends(memory_deployment.journal, len(task_ids))
    report = check_cap(memory_deployment.journal)
    assert report.violates(LIMIT), f"memory mode must break I1: {report.summary(LIMIT)}"


def wait_for_journal_ends(journal: Path, count: int, timeout: float = 120) -> None:
    def ended() -> bool:
        return sum(f.read_text().count('"event":"end"') for f in journal.glob("*.jsonl")) >= count

    wait_until(ended, timeout=timeout, interval=0.1, what=f"{count} syntheses journaled")


# -- I2 visibility -----------------------------------------------------------------------------


def test_i2_every_worker_of_every_host_returns_the_task(redis_deployment: Deployment) -> None:
    task_ids = [a.body["task_id"] for a in submit_many(redis_deployment.urls, ["seen"] * 6)]
    report = probe_visibility(redis_deployment.urls, task_ids, reads_per_task=24, parallel=8)
    assert len(report.workers_reached) >= 4, report.summary()
    assert report.violations == [], report.summary()


# -- I4 idempotency ----------------------------------------------------------------------------


def _same_key_burst(deployment: Deployment, key: str, n: int = 16) -> list[tuple[int, str]]:
    answers = submit_many(
        deployment.urls, ["one payload"] * n, parallel=n, headers={"Idempotency-Key": key}
    )
    return [(a.status, a.body["task_id"]) for a in answers]


def test_i4_concurrent_posts_with_one_key_create_one_task(redis_deployment: Deployment) -> None:
    before = call(redis_deployment.urls[0], "GET", "/api/monitor/stats").body["total"]
    results = _same_key_burst(redis_deployment, "i4-redis")
    after = call(redis_deployment.urls[1], "GET", "/api/monitor/stats").body["total"]
    assert len({task_id for _, task_id in results}) == 1, results
    assert sorted(status for status, _ in results) == [200] * 15 + [202]
    assert after - before == 1


def test_i4_checker_flags_memory_mode(memory_deployment: Deployment) -> None:
    results = _same_key_burst(memory_deployment, "i4-memory")
    assert len({task_id for _, task_id in results}) > 1, "memory mode must break I4 under -w 4"


# -- I3 monotonic and I7 events across workers -------------------------------------------------


def test_i3_i7_streams_on_other_workers_see_every_state_in_order(
    redis_deployment: Deployment,
) -> None:
    host_a, host_b = redis_deployment.urls
    accepted = call(host_a, "POST", "/api/tts", {"text": "cross worker events " * 10})
    assert accepted.status == 202
    task_id = accepted.body["task_id"]
    streams: list[SSEStream] = []
    lock = threading.Lock()

    def follow(base: str) -> None:
        stream = read_stream(base, f"/api/task/stream/{task_id}", timeout=60)
        with lock:
            streams.append(stream)

    readers = [threading.Thread(target=follow, args=(base,)) for base in [host_b] * 4 + [host_a]]
    for reader in readers:
        reader.start()
    polled = [
        call(redis_deployment.urls[n % 2], "GET", f"/api/task/status/{task_id}").body
        for n in range(20)
    ]
    for reader in readers:
        reader.join(90)
    final = wait_terminal(redis_deployment.urls, [task_id])[task_id]

    assert len(streams) == 5
    stream_workers = {s.headers["X-Worker-Id"] for s in streams}
    assert stream_workers - {final["worker"]}, "some stream ran on a worker the task did not"
    for stream in streams:
        observed = [(m.json()["version"], m.json()["state"]) for m in stream.messages]
        assert stream.ended, "every stream ends after the terminal state"
        assert stream_violations(observed) == [], (stream.headers["X-Worker-Id"], observed)
        assert observed[-1] == (final["version"], "done")
    assert monotonic_violations([(b["version"], b["state"]) for b in polled]) == []


def test_i7_checker_flags_memory_mode(memory_deployment: Deployment) -> None:
    (base,) = memory_deployment.urls
    accepted = call(base, "POST", "/api/tts", {"text": "who hears me " * 10})
    task_id = accepted.body["task_id"]
    streams: list[SSEStream] = []
    lock = threading.Lock()

    def follow() -> None:
        stream = read_stream(base, f"/api/task/stream/{task_id}", timeout=60)
        with lock:
            streams.append(stream)

    readers = [threading.Thread(target=follow) for _ in range(8)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(90)
    missed = [
        s for s in streams if not s.messages or s.messages[-1].json()["state"] not in ("done",)
    ]
    assert len({s.headers.get("X-Worker-Id") for s in streams}) >= 2
    assert missed, "memory mode must break I7: streams on other workers never see the end"
    assert all(s.status == 404 for s in missed)


# -- I5 liveness when a worker dies -------------------------------------------------------------


def test_i5_a_killed_workers_task_fails_abandoned_and_its_permit_returns(
    redis_deployment: Deployment,
) -> None:
    ttl_s = int(COMMON_ENV["TASKMON_LEASE_TTL_MS"]) / 1000
    host_a, host_b = redis_deployment.urls
    accepted = call(host_a, "POST", "/api/tts", {"text": "k" * 2500})  # ~10 s of synthesis
    assert accepted.status == 202
    task_id = accepted.body["task_id"]

    def status() -> dict[str, object]:
        return call(host_b, "GET", f"/api/task/status/{task_id}").body  # type: ignore[no-any-return]

    wait_until(lambda: status()["state"] == "running", timeout=30, what="task running")
    worker = str(status()["worker"])
    redis_deployment.hosts[0].signal_worker(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)
    killed_at = time.monotonic()

    wait_until(lambda: in_use(host_b) == 0, timeout=ttl_s + 5, what="permit returned")
    permit_back_s = time.monotonic() - killed_at
    wait_until(lambda: status()["state"] == "failed", timeout=2 * ttl_s + 5, what="abandoned")
    failed_s = time.monotonic() - killed_at
    final = status()
    assert final["error"] == {"code": "abandoned", "message": f"worker {worker} stopped"}
    # The bounds of I5 with one polling interval and a process start of slack.
    assert permit_back_s <= ttl_s + 2, permit_back_s
    assert failed_s <= 2 * ttl_s + 2, failed_s
    # The deployment goes on serving: gunicorn replaced the worker.
    again = call(host_a, "POST", "/api/tts", {"text": "after the kill"})
    assert (
        wait_terminal([host_b], [again.body["task_id"]])[again.body["task_id"]]["state"] == "done"
    )


def in_use(base: str) -> int:
    return int(call(base, "GET", "/api/monitor/stats").body["concurrency"]["in_use"])
