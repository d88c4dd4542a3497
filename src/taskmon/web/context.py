"""How a view reaches the wired services: the one Runtime that init_app stored on the app."""

from __future__ import annotations

from flask import Flask, current_app

from taskmon.runtime import Runtime

EXTENSION_KEY = "taskmon"


def attach(app: Flask, rt: Runtime) -> None:
    app.extensions[EXTENSION_KEY] = rt


def runtime_of(app: Flask) -> Runtime:
    """The Runtime behind `app` (for gunicorn's worker_exit, tests and scripts)."""
    rt: Runtime = app.extensions[EXTENSION_KEY]
    return rt


def runtime() -> Runtime:
    """The Runtime behind the app handling the current request."""
    return runtime_of(current_app)
