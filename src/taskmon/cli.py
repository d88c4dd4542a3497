"""The `taskmon` command: `taskmon serve [--workers N] [--bind HOST:PORT]` runs gunicorn."""

from __future__ import annotations

import argparse
import os
import sys

from taskmon import __version__
from taskmon.config import ConfigError, load_settings


def _serve(args: argparse.Namespace) -> int:
    try:
        load_settings()  # fail here, once, with the message, rather than in every worker
    except ConfigError as exc:
        print(f"taskmon: {exc}", file=sys.stderr)
        return 2
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:taskmon.gunicorn_conf",
        "--workers",
        str(args.workers),
        "--bind",
        args.bind,
    ]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    argv.append("taskmon.wsgi:app")
    sys.stdout.flush()
    # exec, so signals from a supervisor reach gunicorn's master directly.
    os.execv(sys.executable, argv)  # noqa: S606
    return 0  # pragma: no cover


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taskmon", description=__doc__)
    parser.add_argument("--version", action="version", version=f"taskmon {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the API and the monitor page with gunicorn")
    serve.add_argument(
        "--workers",
        "-w",
        type=int,
        default=int(os.environ.get("WEB_CONCURRENCY", "4")),
        help="worker processes (default 4)",
    )
    serve.add_argument(
        "--bind",
        "-b",
        default=os.environ.get("TASKMON_BIND", "127.0.0.1:8000"),
        help="HOST:PORT to listen on (default 127.0.0.1:8000)",
    )
    serve.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads per worker, one per open SSE stream (default 32)",
    )
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
