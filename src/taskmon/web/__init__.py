"""The web layer as a Flask extension: init_app attaches a Runtime, registers blueprints,
error handlers and the headers every response carries."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from taskmon.domain import InvalidInput
from taskmon.ports import BackendRefused, BackendUnavailable, TaskUnknownWhileDegraded
from taskmon.runtime import Runtime
from taskmon.web import admin, api, openapi, pages, sse, stream_slots, workers
from taskmon.web.context import attach, runtime
from taskmon.web.problems import problem
from taskmon.web.timing import init_timing

log = logging.getLogger(__name__)

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


class BoundedJSONProvider(DefaultJSONProvider):
    """Flask's JSON, where a body nested too deeply to decode is bad JSON (a 400).

    json.loads raises RecursionError, not ValueError, for `[[[...` a few thousand deep (a 64 KiB
    body holds 30,000), and Werkzeug turns only a ValueError into a 400: it was a 500.
    """

    ensure_ascii = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("the JSON is nested too deeply to decode") from None


def init_app(app: Flask, rt: Runtime) -> None:
    """Serve `rt` through `app`: its API, SSE, pages and admin endpoints."""
    app.config["MAX_CONTENT_LENGTH"] = rt.settings.max_body_bytes
    app.json = BoundedJSONProvider(app)
    attach(app, rt)
    init_timing(app)
    stream_slots.attach(app, rt.settings.sse_stream_limit)
    app.register_blueprint(api.bp)
    app.register_blueprint(sse.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(workers.bp)

    @app.errorhandler(InvalidInput)
    def _invalid_input(exc: InvalidInput) -> Response:
        return problem(400, str(exc), slug="invalid-input", field=exc.field_name)

    @app.errorhandler(BackendUnavailable)
    def _backend_unavailable(exc: BackendUnavailable) -> Response:
        # Expected when Redis is cut: a warning with what to do, no traceback, a 503 to retry.
        log.warning("answering 503: %s", exc)
        return problem(
            503,
            "the task store did not answer in time; retry shortly",
            slug="backend-unavailable",
            headers={"Retry-After": "1"},
        )

    @app.errorhandler(BackendRefused)
    def _backend_refused(exc: BackendRefused) -> Response:
        # Logged once per process, with the script line and the rules to add, where it was
        # met: no traceback here, and a 503 (it is not the client's fault, nor a bug).
        return problem(
            503,
            "the task store refused this call to taskmon's Redis user (its ACL lacks a "
            "command, key or channel); an operator must fix the user's rules: see the log",
            slug="backend-refused",
            headers={"Retry-After": "30"},
        )

    @app.errorhandler(TaskUnknownWhileDegraded)
    def _unknown_while_degraded(exc: TaskUnknownWhileDegraded) -> Response:
        # Not a 404: the task may exist on another worker or in Redis. 421 says "not this
        # server, now": retry, on a fresh connection, once Redis is back.
        why = (
            "which runs degraded while Redis is away"
            if runtime().degraded
            else "which has just come back to Redis while the other workers write back"
        )
        return problem(
            421,
            f"task {exc.task_id} is not known to this worker, {why}; it may exist: retry "
            "shortly, on a new connection",
            slug="task-unknown-while-degraded",
            # A new connection may reach another worker; this one would come back here.
            headers={"Retry-After": "1", "Connection": "close"},
            task_id=exc.task_id,
            degraded=runtime().degraded,
            settling=not runtime().degraded,
        )

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = dict(exc.get_headers()) if status == 405 else {}
        allow = {"Allow": headers["Allow"]} if "Allow" in headers else None
        return problem(status, exc.description or "", headers=allow)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # Logged with its traceback here; the client gets no internals.
        log.exception("unhandled error")
        return problem(500, "an internal error occurred; it has been logged", slug="internal")

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["X-Worker-Id"] = runtime().worker_id
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response
