"""The `taskmon` command: `taskmon serve [--workers N] [--bind HOST:PORT]` runs gunicorn."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import threading
from pathlib import Path

from taskmon import __version__
from taskmon.config import ConfigError, load_settings
from taskmon.env_file import env_file_from_environment


def _check_settings() -> None:
    """Validate what the workers will run with: the environment, and the settings file over
    it when TASKMON_ENV_FILE names one. Raises ConfigError (a refused file is one too)."""
    env_file = env_file_from_environment()
    if env_file is None:
        load_settings()
        return
    saved = dict(os.environ)
    try:
        env_file.apply(load_settings)
    finally:
        # The master applies the file itself: it must start from the environment as it is.
        os.environ.clear()
        os.environ.update(saved)


def _gunicorn() -> list[str]:
    """How to start gunicorn so that a USR2 re-exec works: its console script. Started as
    `python -m gunicorn`, a re-exec runs gunicorn/__main__.py as a script, whose folder then
    shadows the standard library (gunicorn has an `http` package), and the new master fails."""
    script = Path(sys.executable).with_name("gunicorn")
    found = str(script) if script.exists() else shutil.which("gunicorn")
    return [sys.executable, found] if found else [sys.executable, "-m", "gunicorn"]


def _serve(args: argparse.Namespace) -> int:
    if args.threads:
        # The setting as well as gunicorn's flag: the workers derive their stream limit
        # (TASKMON_SSE_MAX_STREAMS) from it, and it is validated with the rest below.
        os.environ["TASKMON_THREADS"] = str(args.threads)
    try:
        _check_settings()  # fail here, once, with the message, rather than in every worker
    except ConfigError as exc:
        print(f"taskmon: {exc}", file=sys.stderr)
        return 2
    argv = [*_gunicorn(), "--config", "python:taskmon.gunicorn_conf"]
    # Left out unless given: the config reads WEB_CONCURRENCY and TASKMON_BIND itself, after
    # the settings file, which may set them.
    if args.workers is not None:
        argv += ["--workers", str(args.workers)]
    if args.bind is not None:
        argv += ["--bind", args.bind]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    argv.append("taskmon.wsgi:app")
    sys.stdout.flush()
    # exec, so signals from a supervisor reach gunicorn's master directly.
    os.execv(sys.executable, argv)  # noqa: S606
    return 0  # pragma: no cover


def _fault_proxy(args: argparse.Namespace) -> int:
    from taskmon.faultproxy import VERSION, FaultProxy  # noqa: PLC0415 - only here

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        proxy = FaultProxy(args.host, args.port)
        proxy.start()
    except OSError as exc:
        print(
            f"taskmon fault-proxy: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    # Toxiproxy's readiness line, so scripts that wait for it work unchanged.
    print(f"fault proxy {VERSION} API listening on {proxy.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taskmon", description=__doc__)
    parser.add_argument("--version", action="version", version=f"taskmon {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the API and the monitor page with gunicorn")
    serve.add_argument(
        "--workers",
        "-w",
        type=int,
        default=None,
        help="worker processes (default WEB_CONCURRENCY, else 4)",
    )
    serve.add_argument(
        "--bind",
        "-b",
        default=None,
        help="HOST:PORT to listen on (default TASKMON_BIND, else 127.0.0.1:8000)",
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads per worker, one per open SSE stream (default 32)",
    )
    fault_proxy = commands.add_parser(
        "fault-proxy",
        help="a TCP fault proxy driven by Toxiproxy's HTTP API (any Toxiproxy client)",
    )
    fault_proxy.add_argument("--host", default="127.0.0.1", help="API address (127.0.0.1)")
    fault_proxy.add_argument("--port", type=int, default=8474, help="API port (8474)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "fault-proxy":
        return _fault_proxy(args)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
