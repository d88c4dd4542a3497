"""RedisSemaphore against a real redis-server: every script and method, wake-ups, failures."""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from taskmon.harness.redis_server import RedisServer
from taskmon.ports import BackendUnavailable, Holder, Lease, PermitTimeout
from taskmon.redis.keys import Keys
from taskmon.redis.semaphore import SCRIPT_KEYS, Attempt, RedisSemaphore
from taskmon.redis.subscriber import RedisSubscriber

pytestmark = pytest.mark.redis

WAIT_S = 10.0  # generous: waits end as soon as their event is set
TTL = 10.0  # long enough that no lease ends during a test unless the test means it to
HANDOFF_S = 2.0  # a wake-up must beat the 5 s retry interval by far


def holder(name: str, worker: str = "w:1") -> Holder:
    return Holder(worker=worker, task_id=f"task-{name}")


def take(sem: RedisSemaphore, name: str, who: Holder | None = None, timeout: float = 0) -> Lease:
    """Acquire with owner token `name` (the service passes the task id)."""
    return sem.acquire(who or holder(name), timeout=timeout, token=name)


class ObservedSemaphore(RedisSemaphore):
    """A RedisSemaphore that signals each run of the acquire script, so tests wait on events."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._events_lock = threading.Lock()
        self._attempted: defaultdict[str, threading.Event] = defaultdict(threading.Event)
        self.listening = threading.Event()
        if self._listener is not None:
            self.listening.set()

    def attempted(self, token: str) -> threading.Event:
        with self._events_lock:
            return self._attempted[token]

    def do_acquire(self, token: str, holder: Holder) -> Attempt:
        attempt = super().do_acquire(token, holder)
        self.attempted(token).set()
        return attempt

    def _listen(self) -> bool:
        listening = super()._listen()
        if listening and hasattr(self, "listening"):  # (the first call runs in __init__)
            self.listening.set()
        return listening


SemFactory = Callable[..., ObservedSemaphore]


def _client(url: str, **overrides: Any) -> redis.Redis:
    options: dict[str, Any] = {"decode_responses": True, "socket_timeout": 5}
    options.update(overrides)
    return redis.Redis.from_url(url, **options)


@pytest.fixture
def worker(redis_server: RedisServer, keys: Keys) -> Iterator[SemFactory]:
    """Builds one simulated worker per call: its own client, subscriber and semaphore."""
    opened: list[tuple[ObservedSemaphore, RedisSubscriber, redis.Redis]] = []

    def make(
        *,
        limit: int = 1,
        ttl: float = TTL,
        retry_s: float = 1.0,
        server: RedisServer | None = None,
        confirm_timeout_s: float = 2.0,
        **client_options: Any,
    ) -> ObservedSemaphore:
        client = _client((server or redis_server).url, **client_options)
        subscriber = RedisSubscriber(client, confirm_timeout_s=confirm_timeout_s)
        try:
            sem = ObservedSemaphore(
                client,
                keys,
                default_limit=limit,
                lease_ttl_s=ttl,
                subscriber=subscriber,
                retry_interval_s=retry_s,
            )
        except BaseException:
            subscriber.close()
            client.close()
            raise
        opened.append((sem, subscriber, client))
        return sem

    yield make
    for sem, subscriber, client in reversed(opened):
        sem.close()
        subscriber.close()
        client.close()


class Acquirer:
    """An acquire running in its own thread; read its outcome once `done` is set."""

    def __init__(
        self,
        sem: RedisSemaphore,
        token: str,
        *,
        timeout: float = WAIT_S,
        on_grant: Callable[[Lease], None] | None = None,
    ) -> None:
        self.token = token
        self.lease: Lease | None = None
        self.error: BaseException | None = None
        self.granted_at = 0.0
        self.finished_at = 0.0
        self.done = threading.Event()
        self._on_grant = on_grant
        self._thread = threading.Thread(
            target=self._run, args=(sem, timeout), name=f"acquire-{token}", daemon=True
        )
        self._thread.start()

    def _run(self, sem: RedisSemaphore, timeout: float) -> None:
        try:
            self.lease = sem.acquire(holder(self.token), timeout=timeout, token=self.token)
            self.granted_at = time.monotonic()
            if self._on_grant is not None:
                self._on_grant(self.lease)
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished_at = time.monotonic()
            self.done.set()

    def result(self, timeout: float = WAIT_S) -> Lease:
        assert self.done.wait(timeout), f"acquire of {self.token} did not finish"
        if self.error is not None:
            raise self.error
        assert self.lease is not None
        return self.lease


def queued(redis_client: redis.Redis, keys: Keys) -> list[str]:
    """The waiting tokens in FIFO order (white-box: the port shows no queue)."""
    return list(redis_client.zrange(keys.sem_queue, 0, -1))


def block(sem: ObservedSemaphore, token: str, **kwargs: Any) -> Acquirer:
    """Start an acquire and return once its first attempt has queued it (no grant)."""
    acquirer = Acquirer(sem, token, **kwargs)
    assert sem.attempted(token).wait(WAIT_S), f"{token} never tried"
    assert not acquirer.done.is_set() or acquirer.error is not None, f"{token} was granted"
    return acquirer


# -- granting, repeating, fencing ----------------------------------------------------------


def test_grants_up_to_the_limit_then_times_out_and_leaves_the_queue(
    worker: SemFactory, redis_client: redis.Redis, keys: Keys
) -> None:
    sem = worker(limit=2)
    first = take(sem, "t1")
    second = take(sem, "t2")
    assert sem.in_use() == 2

    with pytest.raises(PermitTimeout, match="no permit within 0 s"):
        take(sem, "t3")
    started = time.monotonic()
    with pytest.raises(PermitTimeout, match=r"position 1 in the queue, 0 permits free"):
        take(sem, "t4", timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 0.2 + HANDOFF_S

    # A waiter that gave up left the queue and the liveness set.
    assert queued(redis_client, keys) == []
    assert redis_client.zcard(keys.sem_waiters) == 0
    assert sem.in_use() == 2
    assert first.release()
    assert second.release()
    assert sem.in_use() == 0


def test_repeated_acquire_with_a_held_token_returns_that_permit(worker: SemFactory) -> None:
    sem = worker(limit=1)
    lease = take(sem, "a")
    again = take(sem, "a", Holder("w:2", "retried"))  # the cap is full

    assert (again.token, again.fencing, again.holder) == (lease.token, lease.fencing, lease.holder)
    assert sem.in_use() == 1
    assert lease.release()
    assert not again.release()  # one permit, released once
    assert sem.in_use() == 0


def test_fencing_strictly_increases_with_every_grant(worker: SemFactory) -> None:
    sem = worker(limit=2)
    fencings = []
    for token in ["a", "b", "a", "c", "b", "a"]:
        lease = sem.acquire(holder(token), timeout=0, token=token)
        fencings.append(lease.fencing)
        assert lease.release()
    assert fencings == sorted(set(fencings))
    assert len(fencings) == 6


def test_release_returns_true_once_and_an_old_lease_cannot_release_a_new_grant(
    worker: SemFactory,
) -> None:
    sem = worker(limit=1)
    old = take(sem, "a")
    assert old.release() is True
    assert old.release() is False

    new = take(sem, "a")  # the same token, granted again
    assert new.fencing > old.fencing
    assert old.release() is False
    assert old.renew() is False
    assert sem.in_use() == 1
    assert new.renew() is True
    assert new.release() is True
    assert sem.in_use() == 0


# -- leases ---------------------------------------------------------------------------------


def test_a_lease_that_is_not_renewed_ends(worker: SemFactory) -> None:
    sem = worker(limit=1, ttl=0.3)
    lease = take(sem, "a")
    time.sleep(0.4)  # deliberate: let the lease end

    assert sem.in_use() == 0
    other = take(sem, "b")
    assert lease.renew() is False
    assert other.release()


def test_renewing_keeps_the_permit_past_its_ttl(worker: SemFactory) -> None:
    sem = worker(limit=1, ttl=0.3)
    lease = take(sem, "a")
    for _ in range(6):  # 0.6 s in all, twice the TTL
        time.sleep(0.1)  # deliberate: the renewal cadence
        assert lease.renew() is True

    assert sem.in_use() == 1
    with pytest.raises(PermitTimeout):
        take(sem, "b")
    (info,) = sem.holders()
    assert 0.1 < info.expires_in_s <= 0.3
    assert lease.release()


def test_release_after_expiry_is_reported_and_not_counted(worker: SemFactory) -> None:
    sem = worker(limit=1, ttl=0.3)
    expired = take(sem, "a")
    time.sleep(0.4)  # deliberate: let the lease end
    successor = take(sem, "b")

    assert expired.release() is False
    assert sem.in_use() == 1
    assert [h.token for h in sem.holders()] == ["b"]
    assert successor.release() is True
    assert sem.in_use() == 0


# -- many workers -----------------------------------------------------------------------------


def test_two_workers_share_one_cap(worker: SemFactory) -> None:
    a, b = worker(limit=2), worker(limit=2)
    la = take(a, "a", holder("a", "w:a"))
    lb = take(b, "b", holder("b", "w:b"))

    for sem in (a, b):
        assert sem.in_use() == 2
        with pytest.raises(PermitTimeout):
            take(sem, "c")
    assert {h.holder.worker for h in a.holders()} == {"w:a", "w:b"}

    b.set_limit(3)
    assert a.limit() == 3
    lc = take(a, "c")
    for sem, lease in ((b, lc), (a, lb), (b, la)):  # any worker may release any permit
        assert sem.release(lease)
    assert a.in_use() == 0


def test_waiters_of_two_workers_are_served_first_come_first_served(
    worker: SemFactory, redis_client: redis.Redis, keys: Keys
) -> None:
    a, b = worker(limit=1), worker(limit=1)
    blocker = take(a, "x")
    order: list[str] = []
    lock = threading.Lock()

    def record_then_release(lease: Lease) -> None:
        with lock:
            order.append(lease.token)
        lease.release()

    a1 = block(a, "A1", on_grant=record_then_release)
    b1 = block(b, "B1", on_grant=record_then_release)
    a2 = block(a, "A2", on_grant=record_then_release)
    assert queued(redis_client, keys) == ["A1", "B1", "A2"]

    assert blocker.release()
    for acquirer in (a1, b1, a2):
        acquirer.result()
    assert order == ["A1", "B1", "A2"]
    assert a.in_use() == 0


def test_the_acquire_script_grants_only_in_queue_order(
    worker: SemFactory, redis_client: redis.Redis, keys: Keys
) -> None:
    # Script level, no threads: a waiter behind the head never takes the free permit first.
    a, b = worker(limit=1, retry_s=5.0), worker(limit=1, retry_s=5.0)
    blocker = take(a, "x")
    assert not a.do_acquire("A1", holder("A1")).granted
    assert not b.do_acquire("B1", holder("B1")).granted
    assert blocker.release()

    assert b.do_acquire("B1", holder("B1")) == Attempt(False, rank=1, free=1)
    granted = a.do_acquire("A1", holder("A1"))
    assert granted.granted
    assert queued(redis_client, keys) == ["B1"]
    assert a.do_release("A1", granted.fencing)
    assert b.do_acquire("B1", holder("B1")).granted


def test_a_release_hands_the_permit_over_by_wake_up_not_by_retry(worker: SemFactory) -> None:
    a, b = worker(limit=1), worker(limit=1, retry_s=5.0)
    lease = take(a, "a")
    waiter = block(b, "b")

    released_at = time.monotonic()
    assert lease.release()
    waiter.result()
    # Correctness of the wake-up (the retry would take 5 s), not a benchmark.
    assert waiter.granted_at - released_at < HANDOFF_S
    assert waiter.lease is not None
    assert waiter.lease.release()


def test_a_dead_waiter_is_purged_and_does_not_block_the_queue(
    worker: SemFactory, redis_client: redis.Redis, keys: Keys
) -> None:
    # The dead process ran the acquire script once (retry 0.1 s: deadline 0.3 s), then died.
    dead = worker(limit=1, retry_s=0.1)
    live = worker(limit=1, retry_s=0.1)
    blocker = take(live, "x")
    assert dead.do_acquire("dead", holder("dead")) == Attempt(False, rank=0, free=0)
    dead.close()
    waiter = block(live, "live")
    assert queued(redis_client, keys) == ["dead", "live"]

    assert blocker.release()  # wakes "dead", the head of the queue, who never answers
    lease = waiter.result(timeout=WAIT_S)
    assert lease.holder == holder("live")
    assert "dead" not in queued(redis_client, keys)
    assert redis_client.zscore(keys.sem_waiters, "dead") is None
    assert lease.release()


# -- the limit --------------------------------------------------------------------------------


def test_raising_the_limit_wakes_waiters(worker: SemFactory) -> None:
    a, b = worker(limit=1), worker(limit=1, retry_s=5.0)
    lease = take(a, "a")
    waiters = [block(b, "b1"), block(b, "b2")]

    raised_at = time.monotonic()
    a.set_limit(3)
    for waiter in waiters:
        waiter.result()
        assert waiter.granted_at - raised_at < HANDOFF_S
    assert b.in_use() == 3
    assert b.limit() == 3
    for held in [lease, *(w.result() for w in waiters)]:
        assert held.release()


def test_lowering_the_limit_keeps_current_holders(worker: SemFactory) -> None:
    sem = worker(limit=3)
    leases = [sem.acquire(holder(t), timeout=0, token=t) for t in ("a", "b", "c")]

    sem.set_limit(1)
    assert sem.limit() == 1
    assert sem.in_use() == 3
    assert all(lease.renew() for lease in leases)
    assert leases[0].release()
    assert leases[1].release()
    with pytest.raises(PermitTimeout):  # one holder left, still at the new cap
        take(sem, "d")
    assert leases[2].release()
    assert take(sem, "d").release()


def test_limits_below_one_are_refused(worker: SemFactory, redis_server: RedisServer) -> None:
    sem = worker(limit=1)
    with pytest.raises(ValueError, match="at least 1"):
        sem.set_limit(0)
    assert sem.limit() == 1
    with pytest.raises(ValueError, match="at least 1"):
        worker(limit=0)


def test_holders_show_who_holds_what_and_for_how_long(worker: SemFactory) -> None:
    sem = worker(limit=2, ttl=5.0)
    first = take(sem, "t1", Holder("w:1", "task-1"))
    second = take(sem, "t2", Holder("w:2", "task-2"))

    infos = sem.holders()
    assert [(h.holder, h.token, h.fencing) for h in infos] == [
        (Holder("w:1", "task-1"), "t1", first.fencing),
        (Holder("w:2", "task-2"), "t2", second.fencing),
    ]
    assert all(4.0 < h.expires_in_s <= 5.0 for h in infos)
    assert first.release()
    assert [h.token for h in sem.holders()] == ["t2"]
    assert second.release()
    assert sem.holders() == []


# -- closing and failures ---------------------------------------------------------------------


def test_close_wakes_a_waiter_with_permit_timeout_and_keeps_held_permits(
    worker: SemFactory, redis_client: redis.Redis, keys: Keys
) -> None:
    other, sem = worker(limit=1), worker(limit=1, retry_s=5.0)
    lease = take(other, "a")
    waiter = block(sem, "b", timeout=WAIT_S)

    closed_at = time.monotonic()
    sem.close()
    with pytest.raises(PermitTimeout, match="closed"):
        waiter.result()
    assert waiter.finished_at - closed_at < HANDOFF_S
    assert queued(redis_client, keys) == []  # it left the queue

    with pytest.raises(PermitTimeout, match="closed"):
        take(sem, "c", timeout=WAIT_S)
    assert other.in_use() == 1  # held permits stay
    assert lease.release()


def test_a_hung_redis_gives_backend_unavailable_never_a_hang(
    worker: SemFactory, tmp_path: Path
) -> None:
    with RedisServer(workdir=tmp_path) as server:
        fast = {
            "server": server,
            "socket_timeout": 0.3,
            "socket_connect_timeout": 0.3,
            "retry": Retry(NoBackoff(), 1),
        }
        sem = worker(limit=1, retry_s=0.2, **fast)
        lease = take(sem, "a")
        waiter = block(sem, "w", timeout=1.0)
        server.pause()
        try:
            started = time.monotonic()
            with pytest.raises((BackendUnavailable, PermitTimeout)):
                take(sem, "b", timeout=1.0)
            assert time.monotonic() - started < 1.0 + 2.0
            assert waiter.done.wait(1.0 + 2.0), "a waiter hung on a paused Redis"
            assert isinstance(waiter.error, (BackendUnavailable, PermitTimeout))
            # (Not release: a command that timed out may still run once Redis resumes.)
            for call in (sem.in_use, lease.renew):
                with pytest.raises(BackendUnavailable, match="check that TASKMON_REDIS_URL"):
                    call()
        finally:
            server.resume()
        assert sem.in_use() == 1  # back as soon as Redis answers; the lease survived
        assert lease.release()


def test_wake_ups_are_subscribed_later_when_redis_did_not_answer_at_first(
    worker: SemFactory, tmp_path: Path
) -> None:
    with RedisServer(workdir=tmp_path) as server:
        other = worker(limit=1, server=server)
        lease = take(other, "a")
        server.pause()
        try:
            started = time.monotonic()
            sem = worker(limit=1, retry_s=0.2, server=server, confirm_timeout_s=0.2)
            assert time.monotonic() - started < 0.2 + HANDOFF_S  # constructing did not hang
            assert not sem.listening.is_set()
        finally:
            server.resume()
        assert sem.listening.wait(WAIT_S), "the semaphore never subscribed to wake-ups"
        waiter = block(sem, "b")
        assert lease.release()
        assert waiter.result().release()


# -- the scripts ------------------------------------------------------------------------------

_INDEX = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")
_HEADER_LINE = re.compile(r"^--\s+(KEYS|ARGV)\[(\d+)\]\s+(\w+)")


def _lua_files() -> list[str]:
    lua = resources.files("taskmon.redis").joinpath("lua")
    return sorted(p.name for p in lua.iterdir() if p.name.startswith("sem_"))


@pytest.mark.parametrize("name", _lua_files())
def test_each_script_has_a_header_naming_its_keys_argv_and_returns(name: str) -> None:
    text = resources.files("taskmon.redis").joinpath("lua", name).read_text()
    lines = text.splitlines()
    header = []
    for line in lines:
        if not line.startswith("--"):
            break
        header.append(line)
    body = "\n".join(line for line in lines[len(header) :] if not line.lstrip().startswith("--"))

    assert header, f"{name} has no header comment"
    assert header[0].startswith(f"-- {name.removesuffix('.lua')}: "), "header names the script"
    assert any(line.startswith("-- Returns:") for line in header), f"{name}: no Returns line"
    documented: dict[str, dict[int, str]] = {"KEYS": {}, "ARGV": {}}
    for line in header:
        match = _HEADER_LINE.match(line)
        if match:
            documented[match[1]][int(match[2])] = match[3]
    if not documented["ARGV"]:
        assert any(re.match(r"^-- ARGV: none", line) for line in header), f"{name}: no ARGV"
    used: dict[str, set[int]] = {"KEYS": set(), "ARGV": set()}
    for kind, index in _INDEX.findall(body):
        used[kind].add(int(index))

    for kind in ("KEYS", "ARGV"):
        assert used[kind] == set(documented[kind]), f"{name}: {kind} used vs documented"
        assert sorted(documented[kind]) == list(range(1, len(documented[kind]) + 1))
    # The header's key names are the Keys properties the Python side passes, in order.
    script = name.removesuffix(".lua")
    names = tuple(documented["KEYS"][i] for i in sorted(documented["KEYS"]))
    assert names == SCRIPT_KEYS[script]
    assert all(isinstance(getattr(Keys, n), property) for n in names)


def test_every_registered_script_has_a_file() -> None:
    assert {f"{name}.lua" for name in SCRIPT_KEYS} == set(_lua_files())
