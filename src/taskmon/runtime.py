"""The composition root: settings -> adapters -> services, and the lifecycle of what it wires.

`build_runtime(settings)` is the one place that constructs an adapter: it picks the backend
(memory, Redis, or Redis when it answers at start), builds the TaskService over it, and returns
the `Runtime`, everything one worker process owns. `Runtime.start()` starts its background
duties and `Runtime.close()` stops them, finishing or abandoning the worker's tasks first.
Nothing here knows about HTTP: `taskmon.app` puts a Flask app in front of a Runtime, and any
other front (a CLI, a test) can use one without Flask.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from taskmon.backends import Backend, close_all, select_backend
from taskmon.config import Settings
from taskmon.domain import worker_key
from taskmon.engines import Engine, make_engine
from taskmon.failover import (
    Failover,
)
from taskmon.global_metrics import GlobalCollector
from taskmon.journal import SynthesisJournal
from taskmon.ports import BackendUnavailable, Semaphore, TaskMonitor
from taskmon.redis.workers import WorkerRegistry
from taskmon.results import ResultStore
from taskmon.service import TaskService
from taskmon.worker_state import WorkerState

log = logging.getLogger(__name__)

# How often a worker sweeps result files past retention.
_RESULT_SWEEP_S = 600.0


def worker_identity() -> str:
    """`<hostname>:<pid>`, the X-Worker-Id. Call it after fork: the pid is the worker's."""
    return f"{socket.gethostname()}:{os.getpid()}"


def new_boot_id() -> str:
    """8 random hex digits naming this process's start. Draw it after fork: every worker
    must have its own. Hostname and pid repeat (pid 7 in every boot of a container; two
    containers sharing a hostname), so the registry and the reaper tell workers apart by
    the name and this id together; the public X-Worker-Id stays the name alone."""
    return secrets.token_hex(4)


@dataclass
class Runtime:
    """Everything one worker process wired together; closed once at exit.

    `monitor` and `semaphore` are the ports the service runs on; `backend_target` says where
    they keep their state (the Redis URL without its password, or "in-process"). `degraded`
    is true while the worker runs on its fallback instead of the backend it was configured
    for: while Redis does not answer (the failover layer), or for good when auto mode found
    Redis away at start.
    """

    settings: Settings
    worker_id: str
    monitor: TaskMonitor
    semaphore: Semaphore
    engine: Engine
    results: ResultStore
    service: TaskService
    closers: list[Callable[[], None]] = field(default_factory=list)
    backend_target: str = "in-process"
    failover: Failover | None = None
    startup_fallback: bool = False
    # What /metrics collects once per scrape beside the per-process metrics: the global
    # figures read from Redis (none in memory mode, where there is nothing global).
    collectors: list[GlobalCollector] = field(default_factory=list)
    # The Redis worker registry (None in memory mode): the workers list and drain orders.
    registry: WorkerRegistry | None = None
    # This process's boot id (new_boot_id): with worker_id, its identity in the registry.
    boot: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def identity(self) -> str:
        """The worker's entry in the registry: `<worker_id>/<boot>` (domain.worker_key)."""
        return worker_key(self.worker_id, self.boot)

    @property
    def degraded(self) -> bool:
        return self.startup_fallback or (self.failover is not None and self.failover.degraded)

    def worker_state(self) -> WorkerState:
        """This worker's live state, as its heartbeat publishes it."""
        in_flight = self.service.in_flight()
        return WorkerState(
            worker=self.worker_id,
            backend=self.monitor.backend,
            degraded=self.degraded,
            in_flight=in_flight,
            pending=max(0, self.service.pending() - in_flight),
            draining=self.service.draining,
        )

    def close(self, *, wait: bool = False) -> None:
        """Finish or abandon this worker's tasks first, then close the backend.

        What is still running (or not yet recorded) is waited for on a thread the process
        joins before it exits; `wait` does it here instead, for callers (atexit) that run
        after the interpreter has joined its threads.
        """
        if self._stop.is_set():
            return
        self._stop.set()
        self.service.close()
        running = self.service.pending()
        if running and wait:
            self._close_when_idle()
            return
        if running:
            log.warning(
                "%d task(s) still running, or not yet recorded (Redis away), at shutdown: "
                "leases, heartbeat and journal stay on until they end (if the worker is killed "
                "first, the reaper fails them)",
                running,
            )
            # Not a daemon: the process stays up until they end, as the executor would anyway.
            threading.Thread(target=self._close_when_idle, name="taskmon-closing").start()
            return
        self._run_closers()

    def _close_when_idle(self) -> None:
        self.service.finish()
        self._run_closers()

    def _run_closers(self) -> None:
        close_all(self.closers)

    def start(self) -> None:
        """Start the worker's own background duty: sweeping result files past retention
        (TASKMON_TASK_TTL_S) and past the directory's bound (TASKMON_RESULT_MAX_BYTES), at
        start and every _RESULT_SWEEP_S after.

        The adapters' duties (heartbeat, reaper, subscriber) started when they were built.
        Call it once, after fork; `close()` stops it.
        """
        threading.Thread(target=self._sweep_results, name="taskmon-sweep", daemon=True).start()

    def _sweep_results(self) -> None:
        # At start too: a host whose workers restart more often than the interval still sweeps.
        while True:
            try:
                self.sweep_results_once()
            except Exception:
                log.exception("result sweep failed; the next one runs in %g s", _RESULT_SWEEP_S)
            if self._stop.wait(_RESULT_SWEEP_S):
                return

    def sweep_results_once(self) -> None:
        self.results.sweep(
            max_age_s=self.settings.task_ttl_s,
            max_bytes=self.settings.result_max_bytes,
            # A temp file outlives its synthesis only when the worker was killed mid-way.
            temp_max_age_s=2 * self.settings.engine_timeout_s,
        )


def build_runtime(
    settings: Settings, *, worker_id: str | None = None, boot: str | None = None
) -> Runtime:
    """Wire one worker: result store, engine, backend, journal, and the service over them.

    `worker_id` defaults to `worker_identity()` and `boot` to a fresh `new_boot_id()`, so
    call this after fork. Raises ConfigError
    (an engine that is not installed), OSError (a result or journal directory that cannot be
    made) and BackendUnavailable (TASKMON_BACKEND=redis without an answering Redis); what
    was opened before the failure is closed again.
    """
    worker_id = worker_id or worker_identity()
    boot = boot or new_boot_id()
    results = ResultStore(settings.result_dir)
    results.prepare()
    engine = make_engine(settings)
    backend = select_backend(settings, worker_id, boot)
    try:
        return _assemble(settings, worker_id, engine, results, backend, boot=boot)
    except BaseException:
        close_all(backend.closers)
        raise


def _assemble(
    settings: Settings,
    worker_id: str,
    engine: Engine,
    results: ResultStore,
    backend: Backend,
    *,
    boot: str,
) -> Runtime:
    journal = SynthesisJournal(settings.journal_dir)
    try:
        service = TaskService(
            monitor=backend.monitor,
            semaphore=backend.semaphore,
            journal=journal,
            engine=engine,
            results=results,
            worker_id=worker_id,
            boot=boot,
            max_pending=settings.max_pending,
            permit_timeout_s=settings.permit_timeout_s,
            threads=min(settings.concurrency_limit, settings.max_pending),
        )
    except BaseException:
        journal.close()
        raise
    if backend.reaper is not None:
        # The reaper also fails this worker's own tasks that it no longer runs (lost in an
        # outage): any live task naming this worker but absent from here is an orphan.
        backend.reaper.local_tasks = service.pending_ids
    rt = Runtime(
        settings,
        worker_id,
        backend.monitor,
        backend.semaphore,
        engine,
        results,
        service,
        closers=[*backend.closers, journal.close],
        backend_target=backend.target,
        failover=backend.failover,
        startup_fallback=backend.degraded,
        collectors=backend.collectors(),
        registry=backend.registry,
        boot=boot,
    )
    if backend.registry is not None:
        _publish_state(rt, backend.registry)
    return rt


def _publish_state(rt: Runtime, registry: WorkerRegistry) -> None:
    """From now on every heartbeat publishes this worker's state and obeys its drain order;
    the first one now, so the workers list shows this worker from its start."""
    registry.report = rt.worker_state
    registry.on_drain = rt.service.set_draining
    # If Redis is away now, the next heartbeat publishes it (the failover hears of it there).
    with contextlib.suppress(BackendUnavailable):
        registry.heartbeat()
