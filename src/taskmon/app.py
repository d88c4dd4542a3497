"""The composition root: the one place that reads settings and wires adapters to services."""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from flask import Flask

from taskmon import web
from taskmon.config import BackendMode, Settings, load_settings
from taskmon.engines import Engine, make_engine
from taskmon.memory import InMemoryEventHub, InMemorySemaphore, InMemoryTaskMonitor
from taskmon.ports import Semaphore, TaskMonitor
from taskmon.results import ResultStore
from taskmon.service import TaskService

log = logging.getLogger(__name__)

# How often a worker sweeps result files past retention.
_RESULT_SWEEP_S = 600.0


def worker_identity() -> str:
    """`<hostname>:<pid>`, the X-Worker-Id. Call it after fork: the pid is the worker's."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Runtime:
    """Everything one worker process wired together; closed once at exit."""

    settings: Settings
    worker_id: str
    monitor: TaskMonitor
    semaphore: Semaphore
    engine: Engine
    results: ResultStore
    service: TaskService
    degraded: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self.service.close()
        self.monitor.close()

    def sweep_results_forever(self) -> None:
        while not self._stop.wait(_RESULT_SWEEP_S):
            self.results.purge_older_than(self.settings.task_ttl_s)


def _select_backend(settings: Settings) -> tuple[TaskMonitor, Semaphore]:
    """Memory backends for now; the Redis adapters plug in here."""
    if settings.backend is BackendMode.REDIS or (
        settings.backend is BackendMode.AUTO and settings.redis_url is not None
    ):
        log.warning(
            "TASKMON_BACKEND=%s asks for Redis, which this build does not have yet; running on "
            "the in-memory backend: task state, idempotency and the cap are per worker",
            settings.backend.value,
        )
    monitor = InMemoryTaskMonitor(hub=InMemoryEventHub(), ttl_s=settings.task_ttl_s)
    semaphore = InMemorySemaphore(settings.concurrency_limit, lease_ttl_s=settings.lease_ttl_s)
    return monitor, semaphore


def build_runtime(settings: Settings) -> Runtime:
    worker_id = worker_identity()
    results = ResultStore(settings.result_dir)
    results.prepare()
    engine = make_engine(settings)
    monitor, semaphore = _select_backend(settings)
    service = TaskService(
        monitor=monitor,
        semaphore=semaphore,
        engine=engine,
        results=results,
        worker_id=worker_id,
        max_pending=settings.max_pending,
        permit_timeout_s=settings.permit_timeout_s,
        threads=min(settings.concurrency_limit, settings.max_pending),
    )
    return Runtime(settings, worker_id, monitor, semaphore, engine, results, service)


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the WSGI app. `overrides` takes Settings field names and wins over the environment.

    Raises ConfigError (naming the variable) for a bad setting and OSError when the result
    directory cannot be created: start-up stops rather than serve a broken worker.
    """
    settings = load_settings(overrides)
    app = Flask("taskmon", root_path=os.path.dirname(web.__file__))
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    rt = build_runtime(settings)
    app.extensions["taskmon"] = rt
    web.init_app(app)
    threading.Thread(target=rt.sweep_results_forever, name="taskmon-sweep", daemon=True).start()
    atexit.register(rt.close)
    log.info(
        "taskmon worker %s ready: backend=%s engine=%s limit=%d",
        rt.worker_id,
        rt.monitor.backend,
        rt.engine.name,
        settings.concurrency_limit,
    )
    return app
