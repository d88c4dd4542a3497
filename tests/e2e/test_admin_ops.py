"""The admin routes on a real `gunicorn -w 4` over a real redis-server: the workers list shows
every worker with its syntheses in flight; a stuck permit (held by the test, or by a worker
stopped with SIGSTOP) released by its token lets the next waiter run; a drained worker refuses
new tasks (503 `draining`) and readiness while the others accept and its running task ends
done, until the drain is cancelled; 401 for every admin route without the token, and the token
in no log line.

Admin requests land on whichever worker gunicorn hands the connection to: the orders go through
Redis. To reach one worker a test pauses the others (SIGSTOP) for the one call: which worker
accepts is the kernel's choice. Leases of 9 s (heartbeats every 3 s): a stall of a few seconds
ends no lease by itself.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from taskmon.harness.client import Answer, call, wait_terminal
from taskmon.harness.processes import wait_until
from taskmon.harness.redis_server import RedisServer
from taskmon.harness.stack import GunicornInstance
from taskmon.ports import Holder
from taskmon.redis.keys import Keys
from taskmon.web.admin import token_fingerprint
from tests.support.redis_wiring import wire_semaphore
from tests.support.stacks import others_than, paused, redis_mode_env

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

TOKEN = "e2e-admin-token-5f1c9a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LEASE_TTL_MS = 9000
WORKERS = 4
DRAINING = "urn:taskmon:problem:draining"


class Host:
    """The stack under test, its Redis, and the tasks accepted on the way (waited for)."""

    def __init__(self, server: RedisServer, stack: GunicornInstance) -> None:
        self.server = server
        self.stack = stack
        self.url = stack.base_url
        self.extra: list[str] = []

    def admin(self, method: str, path: str, body: Any = None) -> Answer:
        return call(self.url, method, path, body, headers=AUTH)

    def set_limit(self, limit: int) -> None:
        assert self.admin("PUT", "/api/admin/concurrency", {"limit": limit}).status == 200

    def submit_on(self, worker: str, text: str) -> Answer:
        """POST on `worker`: the others are paused for the one call (a stopped process accepts
        no connection), well inside the 9 s leases."""
        with paused(self.stack, *others_than(self.stack, worker), at_most_s=3.0):
            answer = call(self.url, "POST", "/api/tts", {"text": text}, timeout=2.0)
        assert answer.worker == worker, (answer.worker, worker)
        return answer

    def workers(self) -> dict[str, Any]:
        answer = call(self.url, "GET", "/api/monitor/workers")
        assert answer.status == 200
        return answer.body  # type: ignore[no-any-return]

    def get_from(self, worker: str, path: str) -> Answer:
        """GET on `worker`, the others paused for the one call."""
        with paused(self.stack, *others_than(self.stack, worker), at_most_s=3.0):
            answer = call(self.url, "GET", path, timeout=2.0)
        assert answer.worker == worker, (answer.worker, worker)
        return answer


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    root = tmp_path_factory.mktemp("admin-ops")
    with RedisServer(workdir=root / "redis") as server:
        # A configured limit of 8: each worker runs up to 8 syntheses (its executor's threads),
        # whatever cap the tests set live.
        env = redis_mode_env(server.url, root / "journal", limit=8, lease_ttl_ms=LEASE_TTL_MS)
        env["TASKMON_ADMIN_TOKEN"] = TOKEN
        with GunicornInstance(workers=WORKERS, env=env, workdir=root / "host") as stack:
            made = Host(server, stack)
            wait_until(
                lambda: len(made.workers()["workers"]) == WORKERS, timeout=30,
                what="every worker in the list",
            )  # fmt: skip
            yield made


def test_the_workers_list_shows_every_worker_with_its_syntheses_in_flight(host: Host) -> None:
    host.set_limit(8)
    ids = [call(host.url, "POST", "/api/tts", {"text": "w" * 500}).body["task_id"]
           for _ in range(8)]  # fmt: skip

    def running_by_worker() -> Counter[str]:
        states = [call(host.url, "GET", f"/api/task/status/{i}").body for i in ids]
        return Counter(s["worker"] for s in states if s["state"] == "running")

    wait_until(lambda: sum(running_by_worker().values()) == 8, timeout=30, what="8 running")
    expected = running_by_worker()

    def listed_in_flight() -> Counter[str]:
        body = host.workers()
        assert body["scope"] == "global"
        return Counter({w["worker"]: w["in_flight"] for w in body["workers"] if w["in_flight"]})

    # Each entry is as of its worker's last heartbeat (3 s at most), the answering one's live.
    wait_until(lambda: listed_in_flight() == expected, timeout=10, what="in-flight counts")
    body = host.workers()
    assert len(body["workers"]) == WORKERS
    assert {w["worker"] for w in body["workers"]} >= set(expected)
    for entry in body["workers"]:
        assert list(entry) == ["worker", "backend", "degraded", "in_flight", "pending",
                               "draining", "last_seen_s"]  # fmt: skip
        assert entry["backend"] == "redis"
        assert entry["degraded"] is False
        assert 0 <= entry["last_seen_s"] < LEASE_TTL_MS / 1000
    final = wait_terminal([host.url], ids, timeout=60)
    assert {t["state"] for t in final.values()} == {"done"}


def test_a_stuck_permit_released_by_token_lets_the_next_waiter_run(host: Host) -> None:
    host.set_limit(1)
    wiring = wire_semaphore(host.server.url, Keys(), limit=1, ttl_s=30)
    try:
        stuck = wiring.semaphore.acquire(Holder("test:1", "stuck-task"), timeout=5, token="stk1")
        task_id = call(host.url, "POST", "/api/tts", {"text": "next"}).body["task_id"]

        def waiting() -> list[dict[str, Any]]:
            return host.admin("GET", "/api/admin/permits").body["waiters"]  # type: ignore[no-any-return]

        wait_until(lambda: [w["task_id"] for w in waiting()] == [task_id], timeout=10,
                   what="the task queued behind the stuck permit")  # fmt: skip
        listed = host.admin("GET", "/api/admin/permits").body
        assert [(h["worker"], h["task_id"], h["token"]) for h in listed["holders"]] == [
            ("test:1", "stuck-task", "stk1")
        ]
        assert listed["waiters"][0]["position"] == 1
        assert call(host.url, "GET", f"/api/task/status/{task_id}").body["state"] == "queued"

        released = host.admin("DELETE", "/api/admin/permits/stk1")
        assert released.status == 200, released.body
        assert released.body["released"]["task_id"] == "stuck-task"
        assert released.body["released"]["fencing"] == stuck.fencing
        # At once (the release hands the permit over), not when the test's 30 s lease ends.
        final = wait_terminal([host.url], [task_id], timeout=10)
        assert final[task_id]["state"] == "done"
        assert stuck.renew() is False, "the stuck holder's lease is lost"
        again = host.admin("DELETE", "/api/admin/permits/stk1")
        assert again.status == 404
        assert again.body["type"] == "urn:taskmon:problem:permit-not-found"
    finally:
        wiring.close()


def test_a_permit_held_by_a_stopped_worker_released_by_token(host: Host) -> None:
    host.set_limit(1)
    long_id = call(host.url, "POST", "/api/tts", {"text": "s" * 2000}).body["task_id"]

    def holder_of(task_id: str) -> dict[str, Any] | None:
        holders = host.admin("GET", "/api/admin/permits").body["holders"]
        return next((h for h in holders if h["task_id"] == task_id), None)

    wait_until(lambda: holder_of(long_id) is not None, timeout=30, what="the long task's permit")
    held = holder_of(long_id)
    assert held is not None
    pid = int(held["worker"].rsplit(":", 1)[1])
    host.stack.signal_worker(pid, signal.SIGSTOP)
    try:
        next_id = call(host.url, "POST", "/api/tts", {"text": "after the stall"}).body["task_id"]
        wait_until(lambda: holder_of(next_id) is None and any(
            w["task_id"] == next_id for w in host.admin("GET", "/api/admin/permits").body[
                "waiters"]), timeout=10, what="the next task waiting")  # fmt: skip
        released_at = time.monotonic()
        released = host.admin("DELETE", f"/api/admin/permits/{held['token']}")
        assert released.status == 200, released.body
        assert released.body["released"]["worker"] == held["worker"]
        # Granted at once by the release script's hand-over, while the holder is still stopped
        # (its lease, renewed at most a third of the TTL before the stop, has 6 s left at least).
        done = wait_terminal([host.url], [next_id], timeout=20)
        assert done[next_id]["state"] == "done"
        handed_over_s = time.monotonic() - released_at
        print(f"released -> next task done: {handed_over_s:.3f} s")
        assert handed_over_s < LEASE_TTL_MS / 1000 / 2
    finally:
        host.stack.signal_worker(pid, signal.SIGCONT)
    final = wait_terminal([host.url], [long_id], timeout=30)
    # Its own lease keeper finds the lease lost at its next renewal and stops it.
    assert final[long_id]["state"] == "failed"
    assert final[long_id]["error"]["code"] == "lease_lost", final[long_id]
    assert call(host.url, "GET", f"/api/task/result/{long_id}").status != 200


def test_a_drained_worker_refuses_new_tasks_and_readiness_until_cancelled(host: Host) -> None:
    host.set_limit(8)
    target = sorted(w["worker"] for w in host.workers()["workers"])[0]
    running = host.submit_on(target, "d" * 800)
    assert running.status == 202
    try:
        ordered_at = time.monotonic()
        ordered = host.admin("POST", f"/api/admin/workers/{target}/drain")
        assert ordered.status == 202, ordered.body
        assert ordered.body["order"]["worker"] == target
        assert ordered.body["order"]["drain"] is True

        def refused_on_target() -> bool:
            # Readiness, not a submission: POSTs polled until the order applies (a heartbeat,
            # up to 3 s) would pile hundreds of tasks on the other workers, filling queues.
            answer = call(host.url, "GET", "/readyz")
            return answer.worker == target and bool(answer.body.get("type") == DRAINING)

        wait_until(refused_on_target, timeout=15, interval=0.01, what="the drain applied")
        print(f"drain ordered -> refused on {target}: {time.monotonic() - ordered_at:.3f} s")
        others = others_than(host.stack, target)
        assert len(others) == WORKERS - 1
        for other in others:
            accepted = host.submit_on(other, "y")
            assert accepted.status == 202, accepted.body
            host.extra.append(accepted.body["task_id"])
        with paused(host.stack, *others, at_most_s=3.0):
            answer = call(host.url, "POST", "/api/tts", {"text": "y"}, timeout=2.0)
        assert answer.worker == target
        assert answer.status == 503
        assert answer.body["type"] == DRAINING
        assert answer.headers["Retry-After"] == "1"
        ready = host.get_from(target, "/readyz")
        assert ready.status == 503
        assert ready.body["type"] == DRAINING
        assert host.get_from(target, "/api/monitor/workers").body["workers"]
        listed = {w["worker"]: w for w in host.workers()["workers"]}
        assert listed[target]["draining"] is True
        detail = {w["worker"]: w for w in host.admin("GET", "/api/admin/workers").body["workers"]}
        assert detail[target]["drain_ordered_s_ago"] is not None
        # What it ran when the order came finishes as usual.
        final = wait_terminal([host.url], [running.body["task_id"]], timeout=60)
        assert final[running.body["task_id"]]["state"] == "done"
    except BaseException:
        host.admin("DELETE", f"/api/admin/workers/{target}/drain")  # spare the next tests
        raise

    cancelled = host.admin("DELETE", f"/api/admin/workers/{target}/drain")
    assert cancelled.status == 202
    wait_until(lambda: host.get_from(target, "/readyz").status == 200, timeout=15,
               what="the target ready again")  # fmt: skip
    assert host.submit_on(target, "welcome back").status == 202
    assert wait_terminal([host.url], host.extra, timeout=60)


def test_an_order_the_target_answers_itself_shows_in_the_workers_list_at_once(host: Host) -> None:
    target = sorted(w["worker"] for w in host.workers()["workers"])[-1]

    def answered_by_target(method: str) -> Answer:
        for _ in range(400):
            answer = host.admin(method, f"/api/admin/workers/{target}/drain")
            assert answer.status == 202, answer.body
            if answer.body["worker"] == target:
                return answer
        raise AssertionError(f"no {method} drain reached {target}")

    # Heartbeats come every 3 s: a list read just after the answer sees the state the
    # target published with it, not one it will publish at its next heartbeat. The target
    # is paused for the read, so another worker answers it from what Redis holds (the target
    # itself would answer with its live state).
    try:
        for method, draining in (("POST", True), ("DELETE", False)):
            answered_by_target(method)
            with paused(host.stack, target, at_most_s=2.0):
                listing = host.workers()
            assert listing["worker"] != target
            listed = {w["worker"]: w for w in listing["workers"]}
            assert listed[target]["draining"] is draining, (method, listed[target])
    finally:
        host.admin("DELETE", f"/api/admin/workers/{target}/drain")


def test_every_admin_route_wants_the_token_and_names_only_live_workers(host: Host) -> None:
    worker = host.workers()["workers"][0]["worker"]
    routes = [
        ("GET", "/api/admin/permits"),
        ("DELETE", "/api/admin/permits/whatever"),
        ("GET", "/api/admin/workers"),
        ("POST", f"/api/admin/workers/{worker}/drain"),
        ("DELETE", f"/api/admin/workers/{worker}/drain"),
        ("PUT", "/api/admin/concurrency"),
    ]
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer not-the-token"}):
            answer = call(host.url, method, path, {"limit": 2}, headers=headers)
            assert answer.status == 401, (method, path, headers)
    gone = host.admin("POST", "/api/admin/workers/nohost:1/drain")
    assert gone.status == 404
    assert gone.body["type"] == "urn:taskmon:problem:worker-not-found"
    assert host.admin("DELETE", "/api/admin/workers/nohost:1/drain").status == 404
    # A worker publishes its state at its heartbeat: a cancel the previous test made shows
    # there within one (a third of the lease TTL), not at once.
    wait_until(lambda: not any(w["draining"] for w in host.workers()["workers"]), timeout=10,
               what="no worker listed as draining")  # fmt: skip


def test_admin_actions_are_logged_with_a_fingerprint_never_the_token(host: Host) -> None:
    host.set_limit(4)

    def logged() -> str:
        return host.stack.log_tail(100_000)

    wait_until(lambda: "admin: concurrency limit set to 4" in logged(), timeout=10,
               what="the admin line")  # fmt: skip
    text = logged()
    assert TOKEN not in text
    fingerprint = token_fingerprint(TOKEN)
    admin_lines = [line for line in text.splitlines() if "admin: " in line]
    assert admin_lines
    assert all(f"with token {fingerprint}" in line for line in admin_lines), admin_lines
