"""RedisSemaphore against the raw Redis round trip, measured side by side in one run.

    python -m benchmarks.semaphore [--rounds 5] [--duration 2] [--out results.json]

One redis-server (started here, on 127.0.0.1 and a free port) serves a pool of worker
processes (spawn context), each with its own client, subscriber and semaphores, built the way
a gunicorn worker builds them (make_client, RedisSubscriber, RedisSemaphore). Every round
measures every metric once, in an order rotated from round to round, so the noise of a shared
machine hits all metrics alike. The report gives each metric's median over the rounds with its
spread, and ratios computed within each round (ours / the EVALSHA baseline of the same round).
See benchmarks/README.md for how to read them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

import redis

from taskmon.config import load_settings
from taskmon.harness.redis_server import RedisServer
from taskmon.ports import Holder, Lease, PermitTimeout
from taskmon.redis.connection import make_client
from taskmon.redis.keys import Keys
from taskmon.redis.semaphore import Attempt, RedisSemaphore
from taskmon.redis.subscriber import RedisSubscriber

TRIVIAL_SCRIPT = "return 1"
CONTENDED_LIMIT = 2
# Waiters retry this rarely, so a fast grant after a release can only come from the wake-up;
# an acquire slower than SLOW_S means a wake-up was lost and the retry caught it.
RETRY_INTERVAL_S = 5.0
SLOW_S = 1.0
ACQUIRE_TIMEOUT_S = 10.0  # > RETRY_INTERVAL_S: a lost wake-up shows as slow, not as a timeout
START_DELAY_S = 0.1  # between "all ready" and the common start instant
STARTUP_TIMEOUT_S = 60.0  # spawning imports taskmon in every worker, on a busy machine
CALL_TIMEOUT_S = 20.0
IDLE_LIMIT_S = 600.0  # a worker whose parent stays silent this long exits by itself
HANDOFF_SETTLE_S = 0.02  # after the waiter is queued, let it park in its wait
HANDOFF_CHANNEL_WAIT_S = 5.0

EVALSHA_1 = "evalsha_1"
SEM_1 = "sem_1"
EVALSHA_N = "evalsha_n"
SEM_N = "sem_n"
SEM_NC = "sem_nc"
HANDOFF = "handoff"
MEASUREMENTS = (EVALSHA_1, SEM_1, EVALSHA_N, SEM_N, SEM_NC, HANDOFF)


# -- what a worker measures -------------------------------------------------------------------


@dataclass(frozen=True)
class WindowSpec:
    """One timed measurement in one worker: EVALSHA calls, or acquire+release pairs."""

    kind: str  # "evalsha" or "sem"
    prefix: str = ""
    limit: int = 1
    retry_s: float = RETRY_INTERVAL_S


@dataclass
class Sample:
    """What one worker did inside the common window [start, end]."""

    op_ns: list[int] = field(default_factory=list)  # ops completed inside the window
    acquire_ns: list[int] = field(default_factory=list)  # the acquire part of those pairs
    grants: int = 0  # every granted acquire, inside the window or straddling its end
    attempts: int = 0  # runs of the acquire script behind those grants
    slow: int = 0  # grants that took longer than SLOW_S
    timeouts: int = 0
    not_released: int = 0  # release() answered False (the lease had ended)


@dataclass(frozen=True)
class Handoff:
    ns: int  # from just before A's release() to B's acquire() returning
    release_ns: int  # A's release() call alone (a round trip from an idle client)
    idle_evalsha_ns: int  # A's EVALSHA after HANDOFF_SETTLE_S idle, just before this handoff
    attempts: int  # acquire script runs of B's acquire (2 = queued once, then woken)
    released: bool


class CountingSemaphore(RedisSemaphore):
    """A RedisSemaphore that counts runs of its acquire script (one integer add per run)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.attempts = 0
        super().__init__(*args, **kwargs)

    def do_acquire(self, token: str, holder: Holder) -> Attempt:
        self.attempts += 1
        return super().do_acquire(token, holder)


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


def _pause_until(instant_ns: int) -> None:
    delay = (instant_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


class Worker:
    """One process's Redis objects, as a gunicorn worker has them, and its measurements."""

    def __init__(self, index: int, url: str) -> None:
        settings = load_settings({"redis_url": url})
        self.name = f"bench:{index}"
        self.lease_ttl_s = settings.lease_ttl_s
        self.client = make_client(settings, client_name=self.name)
        self.sub_client = make_client(settings, client_name=f"bench-sub:{index}", max_connections=2)
        self.subscriber = RedisSubscriber(self.sub_client)
        self.subscriber.start()
        self.trivial = self.client.register_script(TRIVIAL_SCRIPT)
        self.trivial()  # loads the script: every later call is a plain EVALSHA
        self.sem: CountingSemaphore | None = None
        self.held: Lease | None = None

    def close(self) -> None:
        self.close_sem()
        self.subscriber.close()
        self.sub_client.close()
        self.client.close()

    def open_sem(self, prefix: str, limit: int, retry_s: float) -> CountingSemaphore:
        self.close_sem()
        self.sem = CountingSemaphore(
            self.client,
            Keys(prefix),
            default_limit=limit,
            lease_ttl_s=self.lease_ttl_s,
            subscriber=self.subscriber,
            retry_interval_s=retry_s,
        )
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
            time.sleep(HANDOFF_SETTLE_S)
            started = time.monotonic_ns()
            self.trivial()
            return time.monotonic_ns() - started
        if command == "open":
            self.open_sem(*args)
            return None
        if command == "close":
            self.close_sem()
            return None
        if sem is None:
            raise RuntimeError(f"{command!r} before 'open'")
        if command == "hold":
            self.held = sem.acquire(Holder(self.name, args), timeout=0, token=args)
            return None
        if command == "wait":
            before = sem.attempts
            lease = sem.acquire(Holder(self.name, args), timeout=ACQUIRE_TIMEOUT_S, token=args)
            granted_ns = time.monotonic_ns()
            sem.release(lease)
            return granted_ns, sem.attempts - before
        if command == "release":
            if self.held is None:
                raise RuntimeError("'release' without a held permit")
            lease, self.held = self.held, None
            release_ns = time.monotonic_ns()
            released = sem.release(lease)
            return release_ns, time.monotonic_ns(), released
        raise RuntimeError(f"unknown command {command!r}")

    def window(self, spec: WindowSpec, conn: Connection) -> Sample:
        """Set up, report ready (the start barrier), run from the common start to the end."""
        sem = self.open_sem(spec.prefix, spec.limit, spec.retry_s) if spec.kind == "sem" else None
        try:
            conn.send(("ok", "ready"))
            start_ns, end_ns = _expect(conn, "go", CALL_TIMEOUT_S)
            _pause_until(start_ns)
            return self._evalsha_loop(end_ns) if sem is None else self._sem_loop(sem, end_ns)
        finally:
            self.close_sem()

    def _evalsha_loop(self, end_ns: int) -> Sample:
        sample = Sample()
        call, now, ops = self.trivial, time.monotonic_ns, sample.op_ns
        while (started := now()) < end_ns:
            call()
            done = now()
            if done <= end_ns:
                ops.append(done - started)
        return sample

    def _sem_loop(self, sem: CountingSemaphore, end_ns: int) -> Sample:
        sample = Sample()
        now, before = time.monotonic_ns, sem.attempts
        while now() < end_ns:
            token = uuid.uuid4().hex  # distinct tokens, shaped like the service's task ids
            holder = Holder(self.name, token)
            started = now()
            try:
                lease = sem.acquire(holder, timeout=ACQUIRE_TIMEOUT_S, token=token)
            except PermitTimeout:
                sample.timeouts += 1
                continue
            granted = now()
            released = sem.release(lease)
            done = now()
            sample.grants += 1
            sample.slow += granted - started > SLOW_S * 1e9
            sample.not_released += not released
            if done <= end_ns:
                sample.op_ns.append(done - started)
                sample.acquire_ns.append(granted - started)
        sample.attempts = sem.attempts - before
        return sample


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


# -- the parent: a pool of workers ------------------------------------------------------------


class Pool:
    """Worker processes driven over pipes; close() always ends every one of them."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.size = size
        self.procs: list[BaseProcess] = []
        self.conns: list[Connection] = []

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        for index in range(self.size):
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main,
                args=(index, self.url, child_end),
                name=f"bench-worker-{index}",
                daemon=True,
            )
            proc.start()
            child_end.close()
            self.procs.append(proc)
            self.conns.append(parent_end)
        for index in range(self.size):
            self.recv(index, STARTUP_TIMEOUT_S)

    def send(self, index: int, command: str, args: Any = None) -> None:
        self.conns[index].send((command, args))

    def recv(self, index: int, timeout: float) -> Any:
        conn = self.conns[index]
        if not conn.poll(timeout):
            raise TimeoutError(f"worker {index} did not answer within {timeout:.0f} s")
        try:
            status, payload = conn.recv()
        except EOFError:
            code = self.procs[index].exitcode
            raise RuntimeError(f"worker {index} died (exit code {code})") from None
        if status != "ok":
            raise RuntimeError(f"worker {index}: {payload}")
        return payload

    def call(self, index: int, command: str, args: Any = None) -> Any:
        self.send(index, command, args)
        return self.recv(index, CALL_TIMEOUT_S)

    def window(self, workers: int, spec: WindowSpec, duration_s: float) -> list[Sample]:
        """Every worker sets up; once all are ready they run the same window of time."""
        for index in range(workers):
            self.send(index, "window", spec)
        for index in range(workers):
            self.recv(index, CALL_TIMEOUT_S)  # "ready": the start barrier
        start_ns = time.monotonic_ns() + round(START_DELAY_S * 1e9)
        end_ns = start_ns + round(duration_s * 1e9)
        for index in range(workers):
            self.send(index, "go", (start_ns, end_ns))
        timeout = START_DELAY_S + duration_s + ACQUIRE_TIMEOUT_S + CALL_TIMEOUT_S
        return [self.recv(index, timeout) for index in range(workers)]

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("exit", None))
        deadline = time.monotonic() + 10
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(3)
            if proc.is_alive():
                proc.kill()
                proc.join(3)
        for conn in self.conns:
            conn.close()


# -- statistics -----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of unsorted values; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return float(ordered[max(1, math.ceil(q * len(ordered))) - 1])


def _us(ns: float) -> float:
    return ns / 1000.0


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def window_metrics(samples: list[Sample], duration_s: float, *, pairs: bool) -> dict[str, float]:
    ops = [ns for sample in samples for ns in sample.op_ns]
    found = {
        "ops_s": len(ops) / duration_s,
        "p50_us": _us(percentile(ops, 0.50)),
        "p99_us": _us(percentile(ops, 0.99)),
    }
    if pairs:
        acquires = [ns for sample in samples for ns in sample.acquire_ns]
        releases = [
            o - a
            for sample in samples
            for o, a in zip(sample.op_ns, sample.acquire_ns, strict=True)
        ]
        grants = sum(sample.grants for sample in samples)
        found |= {
            "acquire_p50_us": _us(percentile(acquires, 0.50)),
            "acquire_p99_us": _us(percentile(acquires, 0.99)),
            "release_p50_us": _us(percentile(releases, 0.50)),
            "attempts_per_grant": _ratio(sum(s.attempts for s in samples), grants),
            "slow": sum(sample.slow for sample in samples),
            "timeouts": sum(sample.timeouts for sample in samples),
            "not_released": sum(sample.not_released for sample in samples),
        }
    return found


def round_metrics(
    windows: dict[str, tuple[list[Sample], float]], handoffs: list[Handoff], duration_s: float
) -> dict[str, float]:
    """One round, flattened to `measurement.metric` keys, with the ratios of that round."""
    flat: dict[str, float] = {}
    for name, (samples, server_us) in windows.items():
        metrics = window_metrics(samples, duration_s, pairs=name.startswith("sem"))
        metrics["server_us_per_call"] = server_us
        flat |= {f"{name}.{key}": value for key, value in metrics.items()}
    handoff_ns = [h.ns for h in handoffs]
    flat[f"{HANDOFF}.p50_us"] = _us(percentile(handoff_ns, 0.50))
    flat[f"{HANDOFF}.max_us"] = _us(max(handoff_ns, default=math.nan))
    flat[f"{HANDOFF}.slow"] = sum(ns > SLOW_S * 1e9 for ns in handoff_ns)
    flat[f"{HANDOFF}.release_p50_us"] = _us(percentile([h.release_ns for h in handoffs], 0.5))
    idle_p50 = _us(percentile([h.idle_evalsha_ns for h in handoffs], 0.5))
    flat[f"{HANDOFF}.idle_evalsha_p50_us"] = idle_p50
    base_ops, base_p50 = flat[f"{EVALSHA_1}.ops_s"], flat[f"{EVALSHA_1}.p50_us"]
    flat["ratio.sem_1_throughput"] = _ratio(flat[f"{SEM_1}.ops_s"], base_ops)
    flat["ratio.sem_1_latency"] = _ratio(flat[f"{SEM_1}.p50_us"], base_p50)
    flat["ratio.sem_n_throughput"] = _ratio(flat[f"{SEM_N}.ops_s"], flat[f"{EVALSHA_N}.ops_s"])
    flat["ratio.sem_nc_throughput"] = _ratio(flat[f"{SEM_NC}.ops_s"], flat[f"{EVALSHA_N}.ops_s"])
    flat["ratio.contended_vs_uncontended"] = _ratio(flat[f"{SEM_NC}.ops_s"], flat[f"{SEM_N}.ops_s"])
    flat["ratio.handoff_latency"] = _ratio(flat[f"{HANDOFF}.p50_us"], base_p50)
    flat["ratio.handoff_vs_idle"] = _ratio(flat[f"{HANDOFF}.p50_us"], idle_p50)
    return flat


def summarize(rounds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per metric: median over the rounds, min, max, and spread = (max - min) / median."""
    summary: dict[str, dict[str, float]] = {}
    for key in rounds[0]:
        values = [r[key] for r in rounds if not math.isnan(r[key])]
        if not values:
            continue
        median = statistics.median(values)
        spread = (max(values) - min(values)) / median if median else math.nan
        summary[key] = {"median": median, "min": min(values), "max": max(values), "spread": spread}
    return summary


# -- the benchmark ----------------------------------------------------------------------------


class Bench:
    def __init__(self, pool: Pool, client: redis.Redis, options: argparse.Namespace) -> None:
        self.pool = pool
        self.client = client
        self.options = options
        self.run_id = uuid.uuid4().hex[:8]

    def run(self) -> tuple[list[dict[str, float]], list[Handoff]]:
        options = self.options
        if options.warmup > 0:
            self.round(-1, options.warmup, min(2, options.handoffs))  # discarded
        rounds: list[dict[str, float]] = []
        all_handoffs: list[Handoff] = []
        per_round, extra = divmod(options.handoffs, options.rounds)
        for index in range(options.rounds):
            handoff_count = per_round + (index < extra)
            started = time.monotonic()
            flat, handoffs = self.round(index, options.duration, handoff_count)
            rounds.append(flat)
            all_handoffs += handoffs
            print(
                f"round {index + 1}/{options.rounds} done in {time.monotonic() - started:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        return rounds, all_handoffs

    def round(
        self, index: int, duration_s: float, handoff_count: int
    ) -> tuple[dict[str, float], list[Handoff]]:
        shift = max(0, index) % len(MEASUREMENTS)
        order = MEASUREMENTS[shift:] + MEASUREMENTS[:shift]
        n = self.options.processes
        windows: dict[str, tuple[list[Sample], float]] = {}
        handoffs: list[Handoff] = []
        for name in order:
            prefix = f"bench-{self.run_id}-r{index}-{name}"
            if name == HANDOFF:
                handoffs = self.handoffs(prefix, handoff_count)
                continue
            workers, spec = {
                EVALSHA_1: (1, WindowSpec("evalsha")),
                EVALSHA_N: (n, WindowSpec("evalsha")),
                SEM_1: (1, WindowSpec("sem", prefix, 1)),
                SEM_N: (n, WindowSpec("sem", prefix, n)),
                SEM_NC: (n, WindowSpec("sem", prefix, CONTENDED_LIMIT)),
            }[name]
            self.client.config_resetstat()
            samples = self.pool.window(workers, spec, duration_s)
            windows[name] = (samples, self._server_us_per_evalsha())
        return round_metrics(windows, handoffs, duration_s), handoffs

    def _server_us_per_evalsha(self) -> float:
        """Redis's own time per EVALSHA since the last CONFIG RESETSTAT (INFO commandstats)."""
        stats = self.client.info("commandstats").get("cmdstat_evalsha", {})
        return float(stats.get("usec_per_call", math.nan))

    def handoffs(self, prefix: str, count: int) -> list[Handoff]:
        """A (worker 0) holds the only permit, B (worker 1) waits for it; A releases."""
        queue_key = Keys(prefix).sem_queue
        found: list[Handoff] = []
        for worker in (0, 1):
            self.pool.call(worker, "open", (prefix, 1, RETRY_INTERVAL_S))
        try:
            for i in range(count):
                idle_evalsha_ns = self.pool.call(0, "idle_evalsha")
                self.pool.call(0, "hold", f"a{i}")
                self.pool.send(1, "wait", f"b{i}")
                self._wait_queued(queue_key)
                time.sleep(HANDOFF_SETTLE_S)
                release_ns, released_ns, released = self.pool.call(0, "release")
                granted_ns, attempts = self.pool.recv(1, ACQUIRE_TIMEOUT_S + CALL_TIMEOUT_S)
                found.append(
                    Handoff(
                        granted_ns - release_ns,
                        released_ns - release_ns,
                        idle_evalsha_ns,
                        attempts,
                        released,
                    )
                )
        finally:
            for worker in (0, 1):
                self.pool.call(worker, "close")
        return found

    def _wait_queued(self, queue_key: str) -> None:
        deadline = time.monotonic() + HANDOFF_CHANNEL_WAIT_S
        while self.client.zcard(queue_key) < 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the waiter never queued within {HANDOFF_CHANNEL_WAIT_S} s")
            time.sleep(0.001)


# -- the report -------------------------------------------------------------------------------

_SETTLE_MS = f"{HANDOFF_SETTLE_S * 1000:g}"
ROWS: list[tuple[str, str, int] | str] = [
    "baseline: EVALSHA of `return 1`",
    (f"{EVALSHA_1}.ops_s", "1 client, ops/s", 0),
    (f"{EVALSHA_1}.p50_us", "1 client, latency p50 (us)", 1),
    (f"{EVALSHA_1}.p99_us", "1 client, latency p99 (us)", 1),
    (f"{EVALSHA_N}.ops_s", "{n} processes, ops/s (total)", 0),
    (f"{EVALSHA_N}.p50_us", "{n} processes, latency p50 (us)", 1),
    (f"{EVALSHA_1}.server_us_per_call", "Redis time per EVALSHA (us, commandstats)", 1),
    "acquire+release pairs",
    (f"{SEM_1}.ops_s", "1 client, pairs/s", 0),
    (f"{SEM_1}.p50_us", "1 client, pair p50 (us)", 1),
    (f"{SEM_1}.p99_us", "1 client, pair p99 (us)", 1),
    (f"{SEM_1}.acquire_p50_us", "1 client, acquire p50 (us)", 1),
    (f"{SEM_1}.release_p50_us", "1 client, release p50 (us)", 1),
    (f"{SEM_1}.server_us_per_call", "1 client, Redis time per script (us)", 1),
    (f"{SEM_N}.ops_s", "{n} processes, limit {n}, pairs/s (total)", 0),
    (f"{SEM_N}.p50_us", "{n} processes, limit {n}, pair p50 (us)", 1),
    (f"{SEM_N}.attempts_per_grant", "{n} processes, limit {n}, scripts per grant", 2),
    (f"{SEM_N}.server_us_per_call", "{n} processes, limit {n}, Redis time/script (us)", 1),
    (f"{SEM_NC}.ops_s", "{n} processes, limit {c}, pairs/s (total)", 0),
    (f"{SEM_NC}.p50_us", "{n} processes, limit {c}, pair p50 (us)", 1),
    (f"{SEM_NC}.p99_us", "{n} processes, limit {c}, pair p99 (us)", 1),
    (f"{SEM_NC}.attempts_per_grant", "{n} processes, limit {c}, scripts per grant", 2),
    (f"{SEM_NC}.server_us_per_call", "{n} processes, limit {c}, Redis time/script (us)", 1),
    (f"{SEM_NC}.slow", "{n} processes, limit {c}, acquires > 1 s", 0),
    (f"{SEM_NC}.timeouts", "{n} processes, limit {c}, acquire timeouts", 0),
    f"handoff (limit 1, waiter retry every {RETRY_INTERVAL_S:g} s, "
    f"clients idle {_SETTLE_MS} ms before)",
    (f"{HANDOFF}.p50_us", "release -> waiter granted, p50 (us)", 1),
    (f"{HANDOFF}.release_p50_us", "the release call alone, p50 (us)", 1),
    (f"{HANDOFF}.idle_evalsha_p50_us", f"EVALSHA after {_SETTLE_MS} ms idle, p50 (us)", 1),
    "ratios (within each round)",
    ("ratio.sem_1_throughput", "1 client: pairs/s / EVALSHA ops/s", 3),
    ("ratio.sem_1_latency", "1 client: pair p50 / EVALSHA p50", 2),
    ("ratio.sem_n_throughput", "{n} proc, limit {n}: pairs/s / EVALSHA ops/s", 3),
    ("ratio.sem_nc_throughput", "{n} proc, limit {c}: pairs/s / EVALSHA ops/s", 3),
    ("ratio.contended_vs_uncontended", "{n} proc: limit {c} pairs/s / limit {n}", 3),
    ("ratio.handoff_latency", "handoff p50 / EVALSHA p50 (1 client)", 2),
    ("ratio.handoff_vs_idle", "handoff p50 / idle EVALSHA p50", 2),
]


def _fmt(value: float, decimals: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{decimals}f}"


def render(
    meta: dict[str, Any], summary: dict[str, dict[str, float]], handoffs: list[Handoff]
) -> str:
    n, c = meta["processes"], CONTENDED_LIMIT
    lines = [
        f"taskmon semaphore benchmark {meta['date']} (commit {meta['commit']})",
        f"{meta['rounds']} rounds x {meta['duration_s']:g} s per measurement, {n} processes, "
        f"redis-server {meta['redis_version']} on 127.0.0.1, {meta['cpus']} CPUs, "
        f"load {meta['load_before']:.2f} -> {meta['load_after']:.2f}, "
        f"Python {meta['python']}, redis-py {meta['redis_py']}",
        "",
        f"{'metric (median over rounds)':<48}{'median':>11}{'min':>11}{'max':>11}{'spread':>8}",
    ]
    for row in ROWS:
        if isinstance(row, str):
            lines.append(f"-- {row}")
            continue
        key, label, decimals = row
        stats = summary.get(key)
        if stats is None:
            continue
        cells = "".join(f"{_fmt(stats[k], decimals):>11}" for k in ("median", "min", "max"))
        spread = "" if math.isnan(stats["spread"]) else f"{stats['spread']:.0%}"
        lines.append(f"  {label.format(n=n, c=c):<46}{cells}{spread:>8}")
    ns = [h.ns for h in handoffs]
    attempts = Counter(h.attempts for h in handoffs)
    slow = sum(x > SLOW_S * 1e9 for x in ns)
    lines += [
        "",
        f"handoff, all {len(ns)} pooled: p50 {_fmt(_us(percentile(ns, 0.5)), 1)} us, "
        f"p90 {_fmt(_us(percentile(ns, 0.9)), 1)} us, p99 {_fmt(_us(percentile(ns, 0.99)), 1)} "
        f"us, max {_fmt(_us(max(ns, default=math.nan)), 1)} us; "
        f"{slow} of {len(ns)} took > {SLOW_S:g} s (lost wake-up)",
        "handoff acquire scripts per grant: "
        + ", ".join(f"{k}: {v}x" for k, v in sorted(attempts.items()))
        + " (2 = queued once, then woken)",
    ]
    if not all(h.released for h in handoffs):
        lines.append("WARNING: some releases by A answered False (the lease had ended)")
    return "\n".join(lines)


def _commit() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if done.returncode == 0:
            return done.stdout.strip()
    return "unknown"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.semaphore", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument(
        "--duration", type=float, default=2.0, help="seconds per throughput measurement (2)"
    )
    parser.add_argument("--processes", type=int, default=8, help="worker processes (8)")
    parser.add_argument("--handoffs", type=int, default=50, help="handoffs over all rounds (50)")
    parser.add_argument(
        "--warmup", type=float, default=0.3, help="seconds per measurement of a discarded round"
    )
    parser.add_argument("--out", type=Path, help="also write the results as JSON to this file")
    options = parser.parse_args(argv)
    if not 1 <= options.rounds <= 50:
        parser.error("--rounds must be 1..50")
    if not 0.1 <= options.duration <= 30:
        parser.error("--duration must be 0.1..30 s")
    if not 2 <= options.processes <= 64:
        parser.error("--processes must be 2..64")
    if not 0 <= options.handoffs <= 1000:
        parser.error("--handoffs must be 0..1000")
    if not 0 <= options.warmup <= 10:
        parser.error("--warmup must be 0..10 s")
    return options


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds the finally blocks: workers and Redis stop


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if os.environ.pop("TASKMON_TEST_REDIS_URL", None):
        print("ignoring TASKMON_TEST_REDIS_URL: the benchmark starts its own redis-server")
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="taskmon-bench-") as workdir,
        RedisServer(workdir=Path(workdir)) as server,
    ):
        client = make_client(load_settings({"redis_url": server.url}), client_name="bench:parent")
        pool = Pool(server.url, options.processes)
        try:
            pool.start()
            rounds, handoffs = Bench(pool, client, options).run()
            redis_version = str(client.info("server")["redis_version"])
        finally:
            pool.close()
            client.close()
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": _commit(),
        "rounds": options.rounds,
        "duration_s": options.duration,
        "processes": options.processes,
        "contended_limit": CONTENDED_LIMIT,
        "retry_interval_s": RETRY_INTERVAL_S,
        "redis_version": redis_version,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "python": platform.python_version(),
        "redis_py": redis.__version__,
    }
    summary = summarize(rounds)
    print(render(meta, summary, handoffs))
    if options.out is not None:
        document = {
            "meta": meta,
            "summary": summary,
            "rounds": rounds,
            "handoffs": [asdict(h) for h in handoffs],
        }
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(json.dumps(_json_safe(document), indent=2) + "\n")
        print(f"results written to {options.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: workers and redis-server stopped", file=sys.stderr)
        sys.exit(130)
