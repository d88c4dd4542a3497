"""A spawned worker process: its Redis objects, built as a gunicorn worker builds them, the
subject it measures (taskmon's semaphore or a peer), and the loop that answers the parent's
commands over a pipe (see pool.py for the other end).
"""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Any

from taskmon.config import load_settings
from taskmon.redis.connection import make_client
from taskmon.redis.subscriber import RedisSubscriber

from . import handoff
from .params import CALL_TIMEOUT_S, IDLE_LIMIT_S, TRIVIAL_SCRIPT
from .subjects import PEERS, Env, Subject
from .window import Sample, WindowSpec, evalsha_loop, pause_until, sem_loop


class _Exit(Exception):
    """The parent asked the worker to exit while it waited for something else."""


def _expect(conn: Connection, command: str, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise TimeoutError(f"no {command!r} from the parent within {timeout:.0f} s")
    got, args = conn.recv()
    if got == "exit":
        raise _Exit
    if got != command:
        raise RuntimeError(f"expected {command!r}, got {got!r}")
    return args


class Worker:
    """One process's Redis objects, as a gunicorn worker has them, and its measurements."""

    def __init__(self, index: int, url: str) -> None:
        settings = load_settings({"redis_url": url})
        self.index = index
        self.url = url
        self.name = f"bench:{index}"
        self.lease_ttl_s = settings.lease_ttl_s
        self.client = make_client(settings, client_name=self.name)
        self.sub_client = make_client(settings, client_name=f"bench-sub:{index}", max_connections=2)
        self.subscriber = RedisSubscriber(self.sub_client)
        self.subscriber.start()
        self.trivial = self.client.register_script(TRIVIAL_SCRIPT)
        self.trivial()  # loads the script: every later call is a plain EVALSHA
        self.sem: Subject | None = None
        self.held: object | None = None

    def close(self) -> None:
        self.close_sem()
        self.subscriber.close()
        self.sub_client.close()
        self.client.close()

    def open_sem(self, subject: str, prefix: str, limit: int, retry_s: float) -> Subject:
        self.close_sem()
        env = Env(self.url, self.name, self.client, self.subscriber, self.lease_ttl_s, retry_s)
        self.sem = PEERS[subject].build(env, prefix, limit)
        return self.sem

    def close_sem(self) -> None:
        if self.sem is not None:
            self.sem.close()
            self.sem = None
        self.held = None

    def handle(self, command: str, args: Any, conn: Connection) -> Any:
        sem = self.sem
        if command == "window":
            return self.window(args, conn)
        if command == "idle_evalsha":
            return handoff.idle_evalsha(self.trivial)
        if command == "open":
            self.open_sem(*args)
            return None
        if command == "close":
            self.close_sem()
            return None
        if sem is None:
            raise RuntimeError(f"{command!r} before 'open'")
        if command == "hold":
            self.held = handoff.hold(sem, args)
            return None
        if command == "wait":
            return handoff.wait(sem, args)
        if command == "release":
            if self.held is None:
                raise RuntimeError("'release' without a held permit")
            lease, self.held = self.held, None
            return handoff.release(sem, lease)
        raise RuntimeError(f"unknown command {command!r}")

    def window(self, spec: WindowSpec, conn: Connection) -> Sample:
        """Set up, report ready (the start barrier), run from the common start to the end."""
        sem = None
        if spec.kind == "sem":
            prefix = f"{spec.prefix}-{self.index}" if spec.key_per_worker else spec.prefix
            sem = self.open_sem(spec.subject, prefix, spec.limit, spec.retry_s)
        try:
            conn.send(("ok", "ready"))
            start_ns, end_ns = _expect(conn, "go", CALL_TIMEOUT_S)
            pause_until(start_ns)
            if sem is None:
                return evalsha_loop(self.trivial, end_ns)
            return sem_loop(sem, end_ns, spec.hold_s)
        finally:
            self.close_sem()


def worker_main(index: int, url: str, conn: Connection) -> None:
    """A worker process: answer the parent's commands until it says exit (or goes silent)."""
    try:
        worker = Worker(index, url)
    except Exception as exc:
        conn.send(("error", f"worker {index} could not start: {type(exc).__name__}: {exc}"))
        return
    try:
        conn.send(("ok", "started"))
        while conn.poll(IDLE_LIMIT_S):
            command, args = conn.recv()
            if command == "exit":
                break
            try:
                reply = ("ok", worker.handle(command, args, conn))
            except _Exit:
                break
            except Exception as exc:
                reply = ("error", f"{type(exc).__name__}: {exc}")
            conn.send(reply)
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the parent is gone or interrupted us: just clean up
    finally:
        worker.close()
