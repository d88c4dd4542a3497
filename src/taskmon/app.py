"""The Flask factory: `create_app(overrides)` puts the web layer in front of one Runtime.

Everything that is not HTTP (settings, adapters, services and their lifecycle) is wired in
taskmon.runtime; this module only loads the settings, asks for the runtime and registers the
web layer on a new Flask app.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
from typing import Any

from flask import Flask

from taskmon import web
from taskmon.config import load_settings
from taskmon.runtime import build_runtime

log = logging.getLogger(__name__)


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the WSGI app. `overrides` takes Settings field names and wins over the environment.

    Raises ConfigError (naming the variable) for a bad setting, OSError when the result
    directory cannot be created, and BackendUnavailable when TASKMON_BACKEND=redis and Redis
    does not answer: start-up stops rather than serve a broken worker.
    """
    settings = load_settings(overrides)
    rt = build_runtime(settings)
    try:
        app = Flask("taskmon", root_path=os.path.dirname(web.__file__))
        web.init_app(app, rt)
    except BaseException:
        rt.close(wait=True)
        raise
    rt.start()
    # Outside gunicorn (whose worker_exit closes it first), the runtime closes at exit.
    atexit.register(functools.partial(rt.close, wait=True))
    log.info(
        "taskmon worker %s ready: backend=%s engine=%s limit=%d",
        rt.worker_id,
        rt.monitor.backend,
        rt.engine.name,
        settings.concurrency_limit,
    )
    return app
