"""gunicorn settings for taskmon: `gunicorn -c python:taskmon.gunicorn_conf taskmon.wsgi:app`.

gthread workers, because a sync worker blocks on each SSE stream and is killed at `timeout`;
each open stream holds one thread, so TASKMON_THREADS bounds the streams one worker serves.
The app is not preloaded: every worker builds its own Redis pool and threads after fork.
With TASKMON_ENV_FILE set, the master applies that file now and again at every SIGHUP, before
the new workers fork: that is how a live host changes settings (taskmon.env_file).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any

from taskmon.config import ConfigError, Settings, load_settings
from taskmon.env_file import EnvFileError, env_file_from_environment, shown

_ENV_FILE = env_file_from_environment()


def _settings() -> Settings:
    # Validated once, in the master: a bad TASKMON_ variable stops gunicorn with its name,
    # not every worker with a traceback.
    try:
        return load_settings()
    except ConfigError as exc:
        raise SystemExit(f"taskmon: {exc}") from None


if _ENV_FILE is not None:
    try:
        _ENV_FILE.apply(load_settings)
    except EnvFileError as exc:
        raise SystemExit(f"taskmon: {exc}") from None


bind = os.environ.get("TASKMON_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
worker_class = "gthread"
threads = _settings().threads
# gunicorn's control socket (25.1+) has one default path per user: several instances on a host
# (blue/green, or the harness's simulated hosts) would take it from each other. taskmon does
# not use it; TASKMON_CONTROL_SOCKET turns it on at a path of one's choosing.
control_socket = os.environ.get("TASKMON_CONTROL_SOCKET") or ""
control_socket_disable = not control_socket
# gthread's timeout watches the worker's main loop, not requests: long SSE streams are fine.
timeout = 30
graceful_timeout = 30
keepalive = 5
preload_app = False
accesslog = os.environ.get("TASKMON_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("TASKMON_LOG_LEVEL", "info")
proc_name = "taskmon"


def on_starting(server: Any) -> None:
    if _ENV_FILE is not None and set(_ENV_FILE.applied) & set(server.cfg.env or {}):
        clash = ", ".join(sorted(set(_ENV_FILE.applied) & set(server.cfg.env)))
        raise SystemExit(
            f"taskmon: {_ENV_FILE.path}: {clash} is also set by gunicorn's -e/raw_env, which "
            "every worker applies after fork, over the file: set it in one place"
        )
    # Workers inherit the environment at fork: tell them how many share this host's cap.
    server._taskmon_set_workers = "TASKMON_WORKERS" not in os.environ
    os.environ.setdefault("TASKMON_WORKERS", str(server.cfg.workers))
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="taskmon-metrics-")
        server._taskmon_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    else:
        # Stale files from an earlier master would be summed into this one's metrics.
        for entry in os.scandir(os.environ["PROMETHEUS_MULTIPROC_DIR"]):
            if entry.name.endswith(".db"):
                os.unlink(entry.path)


def on_reload(server: Any) -> None:
    # Called by the master between reading its config again and forking the new workers.
    if _ENV_FILE is None:
        return
    try:
        changed = _ENV_FILE.apply(load_settings, reloading=True, fixed=server.cfg.env or {})
    except Exception as exc:  # whatever it is, the master must keep serving
        server.log.error(
            "taskmon: %s. The new workers keep the settings the old ones had; fix the file "
            "and send SIGHUP again",
            exc,
        )
        return
    server.log.info("taskmon: %s applied; changed: %s", _ENV_FILE.path, shown(changed) or "nothing")


def pre_exec(server: Any) -> None:
    # USR2: the new master starts from cfg.env_orig, a copy of this master's environment
    # taken at its last reload. Give it the environment this master started with instead:
    # it applies the file itself, and makes its own metrics directory (this one's is removed
    # when this master exits).
    environ = server.cfg.env_orig
    if _ENV_FILE is not None:
        _ENV_FILE.restore_into(environ)
    if getattr(server, "_taskmon_metrics_dir", None):
        environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if getattr(server, "_taskmon_set_workers", False):
        environ.pop("TASKMON_WORKERS", None)


def pre_fork(server: Any, worker: Any) -> None:
    # A stable slot 0..workers-1 per worker, reused when a worker is replaced: the fallback
    # policy gives each slot its share of the cap.
    taken = {getattr(w, "taskmon_index", None) for w in server.WORKERS.values()}
    worker.taskmon_index = next(i for i in range(len(taken) + 1) if i not in taken)


def post_fork(server: Any, worker: Any) -> None:
    os.environ["TASKMON_WORKER_INDEX"] = str(worker.taskmon_index)


def worker_exit(server: Any, worker: Any) -> None:
    # gunicorn calls this in the worker as it exits, and in the master for a worker that was
    # already gone: only a process that loaded the app has a runtime to close. Importing the
    # web layer here would load it (and prometheus_client) into the master, see child_exit.
    if "taskmon.web.context" not in sys.modules:
        return
    from taskmon.web.context import EXTENSION_KEY, runtime_of  # noqa: PLC0415

    app: Any = getattr(worker, "wsgi", None)
    if EXTENSION_KEY in getattr(app, "extensions", {}):  # a Flask app built by create_app
        runtime_of(app).close()


def child_exit(server: Any, worker: Any) -> None:
    # Imported here, never at module level: a worker forked from a master that had imported
    # prometheus_client before PROMETHEUS_MULTIPROC_DIR was set would keep single-process values.
    from prometheus_client import multiprocess  # noqa: PLC0415

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    metrics_dir = getattr(server, "_taskmon_metrics_dir", None)
    if metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
